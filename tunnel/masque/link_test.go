package masque

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// fakeStream is a Stream in memory: datagrams sent are recorded, queued
// ones come out of ReceiveDatagram (poll returns nil when none is queued,
// like http3's).
type fakeStream struct {
	io.Reader
	io.Writer
	sent   [][]byte
	queue  [][]byte
	maxLen int // SendDatagram refuses larger datagrams, as quic-go does
	closed error
}

func (f *fakeStream) SendDatagram(b []byte) error {
	if len(b) > f.maxLen {
		return &quic.DatagramTooLargeError{MaxDatagramPayloadSize: int64(f.maxLen)}
	}
	f.sent = append(f.sent, append([]byte(nil), b...))
	return nil
}

func (f *fakeStream) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	if len(f.queue) > 0 {
		d := f.queue[0]
		f.queue = f.queue[1:]
		return d, nil
	}
	if f.closed != nil {
		return nil, f.closed
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err() // poll: nil, nil
	case <-time.After(time.Second):
		return nil, errors.New("test: blocked with nothing queued")
	}
}

func (f *fakeStream) SetWriteDeadline(time.Time) error { return nil }

// TestLinkWritePackets: one datagram per packet, the context ID in the
// byte before it; a packet larger than the path takes goes to TooBig with
// the IP size that fits (the datagram less quarter stream ID and context
// ID), and later packets still go.
func TestLinkWritePackets(t *testing.T) {
	f := &fakeStream{maxLen: 1302}
	l := NewLink(f)
	var tooBig []int
	l.TooBig = func(pkt []byte, mtu int) { tooBig = append(tooBig, len(pkt), mtu) }
	const off = 16
	mk := func(n int, b byte) []byte { p := bytes.Repeat([]byte{b}, off+n); return p }
	bufs := [][]byte{mk(100, 0x45), mk(1400, 0x46), mk(1300, 0x47)}
	if err := l.WritePackets(bufs, []int{100, 1400, 1300}, []bool{false, false, false}, 3, off); err != nil {
		t.Fatal(err)
	}
	if len(f.sent) != 2 || f.sent[0][0] != 0 || len(f.sent[0]) != 101 || f.sent[1][1] != 0x47 || len(f.sent[1]) != 1301 {
		t.Fatalf("sent %d datagrams: %x...", len(f.sent), f.sent)
	}
	if len(tooBig) != 2 || tooBig[0] != 1400 || tooBig[1] != 1300 {
		t.Fatalf("TooBig got %v, want the 1400-byte packet and MTU 1300", tooBig)
	}
}

// TestLinkReadPackets: everything queued comes out as one batch, datagrams
// of another context or empty ones are counted bad, and the stream's
// error comes once nothing is left.
func TestLinkReadPackets(t *testing.T) {
	f := &fakeStream{queue: [][]byte{{0, 0x45, 1}, {7, 0x45}, {0, 0x60, 2, 3}, {0}}}
	l := NewLink(f)
	bufs := [][]byte{make([]byte, 64), make([]byte, 64), make([]byte, 64)}
	sizes := make([]int, 3)
	n, bad, err := l.ReadPackets(bufs, sizes, 16)
	if err != nil || n != 2 || bad != 2 {
		t.Fatalf("ReadPackets = %d packets, %d bad, %v; want 2, 2, nil", n, bad, err)
	}
	if !bytes.Equal(bufs[0][16:16+sizes[0]], []byte{0x45, 1}) || !bytes.Equal(bufs[1][16:16+sizes[1]], []byte{0x60, 2, 3}) {
		t.Fatalf("packets %x %x", bufs[0][16:16+sizes[0]], bufs[1][16:16+sizes[1]])
	}
	f.closed = io.EOF
	if n, _, err := l.ReadPackets(bufs, sizes, 16); n != 0 || err != io.EOF {
		t.Fatalf("after the end: %d, %v", n, err)
	}
}

// TestLinkWait: Wait takes one datagram and keeps it (twice in a row
// takes no second one); the next ReadPackets returns it first, with what
// else is queued; once the stream ended Wait returns its error.
func TestLinkWait(t *testing.T) {
	f := &fakeStream{queue: [][]byte{{0, 0x45, 1}, {0, 0x60, 2}}}
	l := NewLink(f)
	if err := l.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := l.Wait(); err != nil || len(f.queue) != 1 {
		t.Fatalf("second Wait: %v, %d left queued (want 1)", err, len(f.queue))
	}
	bufs := [][]byte{make([]byte, 64), make([]byte, 64), make([]byte, 64)}
	sizes := make([]int, 3)
	if n, bad, err := l.ReadPackets(bufs, sizes, 16); n != 2 || bad != 0 || err != nil || bufs[0][16] != 0x45 || bufs[1][16] != 0x60 {
		t.Fatalf("ReadPackets after Wait = %d, %d, %v (%x %x)", n, bad, err, bufs[0][16], bufs[1][16])
	}
	f.closed = io.EOF
	if err := l.Wait(); err != io.EOF {
		t.Fatalf("Wait after the end: %v", err)
	}
}

func TestParseFrame(t *testing.T) {
	typ, p, err := ParseFrame(frame(0x11, []byte(`{"v":1}`)))
	if err != nil || typ != 0x11 || string(p) != `{"v":1}` {
		t.Fatalf("ParseFrame = %#x %q %v", typ, p, err)
	}
	for _, bad := range [][]byte{nil, {0x11, 0, 0}, {0x11, 0, 0, 5, 1}, {0x11, 0, 0, 0, 1}} {
		if _, _, err := ParseFrame(bad); !errors.Is(err, ErrFormat) {
			t.Errorf("ParseFrame(%x) = %v, want ErrFormat", bad, err)
		}
	}
}

func FuzzParseFrame(f *testing.F) {
	f.Add(frame(0x13, []byte(`{"reason":"revoked"}`)))
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, p, err := ParseFrame(b)
		if err == nil && !bytes.Equal(frame(typ, p), b) {
			t.Fatalf("%x does not re-encode", b)
		}
	})
}
