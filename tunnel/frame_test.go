package tunnel

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

func mustFrame(t testing.TB, dst []byte, typ byte, p []byte) []byte {
	t.Helper()
	out, err := AppendFrame(dst, typ, p)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func pkt(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i)
	}
	return b
}

type frame struct {
	typ byte
	p   []byte
}

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		frames []frame
	}{
		{"one data", []frame{{FrameData, pkt(1400, 1)}}},
		{"min data", []frame{{FrameData, pkt(1, 7)}}},
		{"max data", []frame{{FrameData, pkt(MaxPayload, 3)}}},
		{"keepalive", []frame{{FrameKeepalive, nil}}},
		{"mixed", []frame{
			{FrameHello, []byte(`{"version":1}`)},
			{FrameData, pkt(60, 1)},
			{FrameKeepalive, nil},
			{FrameData, pkt(1500, 2)},
			{FrameClose, []byte(`{"reason":"bye"}`)},
		}},
		{"config then data", []frame{{FrameConfig, []byte(`{}`)}, {FrameData, pkt(20, 9)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			w := NewWriter(&buf, 0)
			for _, f := range tt.frames {
				var err error
				if f.typ == FrameData {
					b := append(make([]byte, Headroom), f.p...)
					err = w.WriteBatch([][]byte{b}, []int{len(f.p)}, 1, Headroom)
				} else {
					err = w.WriteControl(f.typ, f.p)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			var want []byte
			for _, f := range tt.frames {
				want = mustFrame(t, want, f.typ, f.p)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatalf("writer output differs from AppendFrame")
			}
			// Read back with a reader that returns one byte at a time to
			// exercise partial reads.
			r := NewReader(iotest.OneByteReader(&buf), 0)
			for i, f := range tt.frames {
				typ, p, err := r.Next()
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if typ != f.typ || !bytes.Equal(p, f.p) {
					t.Fatalf("frame %d: got type %#x len %d, want %#x len %d", i, typ, len(p), f.typ, len(f.p))
				}
			}
			if _, _, err := r.Next(); err != io.EOF {
				t.Fatalf("at end: %v, want io.EOF", err)
			}
		})
	}
}

func TestReaderErrors(t *testing.T) {
	hdr := func(typ byte, n int) []byte {
		return []byte{typ, byte(n >> 16), byte(n >> 8), byte(n)}
	}
	tests := []struct {
		name    string
		in      []byte
		want    string
		wantEOF bool // io.ErrUnexpectedEOF expected
	}{
		{"empty stream", nil, "EOF", false},
		{"truncated header", []byte{1, 0}, "truncated", true},
		{"truncated payload", append(hdr(FrameData, 10), 1, 2, 3), "truncated", true},
		{"oversize", hdr(FrameData, MaxPayload+1), "exceeds maximum", false},
		{"max length field", hdr(FrameData, 1<<24-1), "exceeds maximum", false},
		{"unknown type", hdr(0x7f, 1), "unknown frame type 0x7f", false},
		{"type zero", hdr(0, 0), "unknown frame type 0x00", false},
		{"empty data", hdr(FrameData, 0), "empty data frame", false},
		{"keepalive payload", append(hdr(FrameKeepalive, 1), 0), "keepalive frame with 1-byte payload", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(tt.in), 0)
			_, _, err := r.Next()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want containing %q", err, tt.want)
			}
			if tt.want != "EOF" && !errors.Is(err, ErrProtocol) {
				t.Fatalf("err %v does not wrap ErrProtocol", err)
			}
			if tt.wantEOF != errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("err %v: ErrUnexpectedEOF = %v, want %v", err, !tt.wantEOF, tt.wantEOF)
			}
			// Sticky.
			if _, _, err2 := r.Next(); err2 != err {
				t.Fatalf("second call: %v, want %v", err2, err)
			}
		})
	}
}

func TestWriterRejects(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, 0)
	big := make([]byte, Headroom+MaxPayload+1)
	tests := []struct {
		name string
		fn   func() error
	}{
		{"empty packet", func() error { return w.WriteBatch([][]byte{make([]byte, 32)}, []int{0}, 1, Headroom) }},
		{"oversize packet", func() error { return w.WriteBatch([][]byte{big}, []int{MaxPayload + 1}, 1, Headroom) }},
		{"past buffer", func() error { return w.WriteBatch([][]byte{make([]byte, 32)}, []int{17}, 1, Headroom) }},
		{"n too big", func() error { return w.WriteBatch([][]byte{make([]byte, 32)}, []int{1}, 2, 0) }},
		{"negative offset", func() error { return w.WriteBatch([][]byte{make([]byte, 32)}, []int{1}, 1, -1) }},
		{"unknown control", func() error { return w.WriteControl(0x42, nil) }},
		{"keepalive payload", func() error { return w.WriteControl(FrameKeepalive, []byte{1}) }},
		{"oversize control", func() error { return w.WriteControl(FrameConfig, make([]byte, MaxPayload+1)) }},
		// Second packet bad: nothing of the batch may be written.
		{"bad second", func() error {
			return w.WriteBatch([][]byte{make([]byte, 32), make([]byte, 32)}, []int{4, 0}, 2, Headroom)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.fn(); err == nil {
				t.Fatal("no error")
			}
			if buf.Len() != 0 {
				t.Fatalf("%d bytes written for a rejected call", buf.Len())
			}
		})
	}
}

// TestWriterDirectFrames checks that frames from directFrame bytes up are
// written straight from the caller's buffer (header in the room in front)
// with the same bytes on the wire as the copying path, that pending small
// frames are flushed before such a frame, and that a frame without room
// for its header is copied instead.
func TestWriterDirectFrames(t *testing.T) {
	const big = directFrame + 100
	vnet := func(size int) []byte { // a virtio-net header, then the packet
		return append(make([]byte, VnetHdrLen), pkt(size, 9)...)
	}
	tests := []struct {
		name   string
		sizes  []int
		gso    []bool
		offset int
		writes int // Write calls reaching the stream
	}{
		{"small only", []int{100, 200}, []bool{false, false}, Headroom, 1},
		{"large alone", []int{big}, []bool{false}, Headroom, 1},
		{"small large small", []int{100, big, 60}, []bool{false, false, false}, Headroom, 3},
		{"two large", []int{big, big + 1}, []bool{false, false}, Headroom, 2},
		{"gso large", []int{60, MaxPacket}, []bool{false, true}, Headroom, 2},
		{"gso just below", []int{directFrame - VnetHdrLen - 1}, []bool{true}, Headroom, 1},
		{"no room for header", []int{big, 50}, []bool{false, false}, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bufs := make([][]byte, len(tt.sizes))
			var want []byte
			for i, n := range tt.sizes {
				bufs[i] = make([]byte, tt.offset+n)
				if tt.gso[i] {
					copy(bufs[i][tt.offset-VnetHdrLen:], vnet(n))
					want = mustFrame(t, want, FrameDataGSO, vnet(n))
					continue
				}
				copy(bufs[i][tt.offset:], pkt(n, byte(i)))
				want = mustFrame(t, want, FrameData, pkt(n, byte(i)))
			}
			var cw countingWriter
			w := NewWriter(&cw, DefaultBufferSize)
			if err := w.WritePackets(bufs, tt.sizes, tt.gso, len(bufs), tt.offset); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(cw.Bytes(), want) {
				t.Fatalf("stream differs from the frames encoded one by one (%d vs %d bytes)", cw.Len(), len(want))
			}
			if cw.writes != tt.writes {
				t.Fatalf("%d writes to the stream, want %d", cw.writes, tt.writes)
			}
			for i, n := range tt.sizes {
				got := bufs[i][tt.offset : tt.offset+n]
				if !tt.gso[i] && !bytes.Equal(got, pkt(n, byte(i))) {
					t.Fatalf("packet %d modified", i)
				}
			}
		})
	}
}

// TestWriterDoesNotModifyBufs checks that a small frame, which is copied,
// leaves the headroom in front of its packet alone.
func TestWriterDoesNotModifyBufs(t *testing.T) {
	b := pkt(Headroom+100, 5)
	orig := bytes.Clone(b)
	w := NewWriter(io.Discard, 0)
	if err := w.WriteBatch([][]byte{b}, []int{100}, 1, Headroom); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, orig) {
		t.Fatal("WriteBatch modified the caller's buffer")
	}
}

// countingWriter counts Write calls (flushes reaching the stream).
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes++
	return c.Buffer.Write(p)
}

func TestWriteBatchOneFlush(t *testing.T) {
	var cw countingWriter
	w := NewWriter(&cw, DefaultBufferSize)
	b := NewBatch(64, Headroom+1500)
	for i := range b.Sizes {
		b.Sizes[i] = 1400
	}
	if err := w.WriteBatch(b.Bufs, b.Sizes, 64, Headroom); err != nil {
		t.Fatal(err)
	}
	if cw.writes != 1 {
		t.Fatalf("%d writes to the stream for one batch, want 1", cw.writes)
	}
	if cw.Len() != 64*(HeaderLen+1400) {
		t.Fatalf("wrote %d bytes", cw.Len())
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("boom") }

func TestWriterStreamError(t *testing.T) {
	w := NewWriter(failWriter{}, 0)
	if err := w.WriteKeepalive(); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v", err)
	}
}

// TestReadBatch covers the gathering rules.
func TestReadBatch(t *testing.T) {
	p1, p2, p3 := pkt(100, 1), pkt(1400, 2), pkt(60, 3)
	var stream []byte
	stream = mustFrame(t, stream, FrameData, p1)
	stream = mustFrame(t, stream, FrameKeepalive, nil)
	stream = mustFrame(t, stream, FrameData, p2)
	stream = mustFrame(t, stream, FrameConfig, []byte(`{"x":1}`))
	stream = mustFrame(t, stream, FrameData, p3)

	type step struct {
		n       int
		err     string
		control []byte // control types seen during this call
	}
	tests := []struct {
		name   string
		src    func() io.Reader
		bufs   int
		bufLen int
		steps  []step
	}{
		{
			name: "all buffered one batch",
			src:  func() io.Reader { return bytes.NewReader(stream) },
			bufs: 8, bufLen: 2048,
			steps: []step{{n: 3, control: []byte{FrameKeepalive, FrameConfig}}, {err: "EOF"}},
		},
		{
			name: "control frame alone returns n=0",
			src: func() io.Reader {
				s := mustFrame(t, nil, FrameKeepalive, nil)
				return iotest.OneByteReader(bytes.NewReader(s))
			},
			bufs: 8, bufLen: 2048,
			steps: []step{{n: 0, control: []byte{FrameKeepalive}}, {err: "EOF"}},
		},
		{
			name: "batch full",
			src:  func() io.Reader { return bytes.NewReader(stream) },
			bufs: 2, bufLen: 2048,
			steps: []step{{n: 2, control: []byte{FrameKeepalive}}, {n: 1, control: []byte{FrameConfig}}, {err: "EOF"}},
		},
		{
			name: "nothing buffered between frames",
			// OneByteReader: after each frame nothing more is buffered
			// beyond what Peek needed, so each call returns one packet.
			src:  func() io.Reader { return iotest.OneByteReader(bytes.NewReader(stream)) },
			bufs: 8, bufLen: 2048,
			steps: []step{{n: 1}, {n: 0, control: []byte{FrameKeepalive}}, {n: 1}, {n: 0, control: []byte{FrameConfig}}, {n: 1}, {err: "EOF"}},
		},
		{
			name: "packet too big for buffer: packets first, error next",
			src:  func() io.Reader { return bytes.NewReader(stream) },
			bufs: 8, bufLen: Headroom + 200,
			steps: []step{{n: 1, control: []byte{FrameKeepalive}}, {err: "does not fit"}, {err: "does not fit"}},
		},
		{
			name: "truncated after packets",
			src:  func() io.Reader { return bytes.NewReader(stream[:len(stream)-10]) },
			bufs: 8, bufLen: 2048,
			steps: []step{{n: 2, control: []byte{FrameKeepalive, FrameConfig}}, {err: "truncated"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(tt.src(), 0)
			b := NewBatch(tt.bufs, tt.bufLen)
			var got [][]byte
			for i, st := range tt.steps {
				var seen []byte
				n, err := r.ReadBatch(b.Bufs, b.Sizes, Headroom, func(typ byte, p []byte) error {
					seen = append(seen, typ)
					return nil
				})
				if st.err != "" {
					if err == nil || !strings.Contains(err.Error(), st.err) {
						t.Fatalf("step %d: err = %v, want %q", i, err, st.err)
					}
				} else if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if n != st.n || !bytes.Equal(seen, st.control) {
					t.Fatalf("step %d: n=%d control=%x, want n=%d control=%x", i, n, seen, st.n, st.control)
				}
				b.N = n
				for _, p := range b.Packets(Headroom) {
					got = append(got, bytes.Clone(p))
				}
			}
			want := [][]byte{p1, p2, p3}[:len(got)]
			for i := range got {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("packet %d differs", i)
				}
			}
		})
	}
}

func TestReadBatchControlError(t *testing.T) {
	var stream []byte
	stream = mustFrame(t, stream, FrameData, pkt(10, 1))
	stream = mustFrame(t, stream, FrameClose, []byte(`{"reason":"x"}`))
	stream = mustFrame(t, stream, FrameData, pkt(10, 2))
	r := NewReader(bytes.NewReader(stream), 0)
	b := NewBatch(4, 64)
	stop := errors.New("peer closed")
	cb := func(typ byte, p []byte) error {
		if typ == FrameClose {
			return stop
		}
		return nil
	}
	n, err := r.ReadBatch(b.Bufs, b.Sizes, Headroom, cb)
	if n != 1 || err != nil {
		t.Fatalf("first: n=%d err=%v", n, err)
	}
	if n, err = r.ReadBatch(b.Bufs, b.Sizes, Headroom, cb); n != 0 || err != stop {
		t.Fatalf("second: n=%d err=%v", n, err)
	}
}

func TestReadBatchBadArgs(t *testing.T) {
	r := NewReader(bytes.NewReader(nil), 0)
	if _, err := r.ReadBatch(nil, nil, 0, nil); err == nil {
		t.Fatal("no error for empty batch")
	}
}

// TestWriterConcurrent has several goroutines write batches and control
// frames at once; every frame must arrive whole (run with -race).
func TestWriterConcurrent(t *testing.T) {
	pr, pw := io.Pipe()
	w := NewWriter(pw, 8192)
	const goroutines, batches, per = 4, 50, 8
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := NewBatch(per, Headroom+300)
			for i := range per {
				b.Sizes[i] = 100 + g*10 + i
				b.Bufs[i][Headroom] = byte(g)
			}
			for range batches {
				if err := w.WriteBatch(b.Bufs, b.Sizes, per, Headroom); err != nil {
					t.Error(err)
					return
				}
				if err := w.WriteKeepalive(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); pw.Close() }()

	r := NewReader(pr, 0)
	data, ka := 0, 0
	for {
		typ, p, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch typ {
		case FrameData:
			g := int(p[0])
			if g >= goroutines || len(p) < 100+g*10 || len(p) >= 100+g*10+per {
				t.Fatalf("garbled packet: first byte %d len %d", p[0], len(p))
			}
			data++
		case FrameKeepalive:
			ka++
		}
	}
	if data != goroutines*batches*per || ka != goroutines*batches {
		t.Fatalf("got %d data, %d keepalive frames", data, ka)
	}
}

func TestBuffered(t *testing.T) {
	var stream []byte
	stream = mustFrame(t, stream, FrameData, pkt(10, 1))
	stream = mustFrame(t, stream, FrameKeepalive, nil)
	r := NewReader(bytes.NewReader(stream), 0)
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if got := r.Buffered(); got != HeaderLen {
		t.Fatalf("Buffered = %d, want %d", got, HeaderLen)
	}
	if _, _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if got := r.Buffered(); got != 0 {
		t.Fatalf("Buffered = %d, want 0", got)
	}
}

func TestFrameName(t *testing.T) {
	for typ, want := range map[byte]string{FrameData: "data", FrameHello: "hello", FrameConfig: "config",
		FrameKeepalive: "keepalive", FrameClose: "close", FramePush: "push", 0x99: "unknown(0x99)"} {
		if got := FrameName(typ); got != want {
			t.Errorf("FrameName(%#x) = %q, want %q", typ, got, want)
		}
	}
}

func FuzzReader(f *testing.F) {
	var s []byte
	s, _ = AppendFrame(s, FrameData, pkt(40, 1))
	s, _ = AppendFrame(s, FrameKeepalive, nil)
	s, _ = AppendFrame(s, FrameHello, []byte(`{"version":1}`))
	s, _ = AppendFrame(s, FramePush, []byte(`{"version":1,"address":"10.8.0.2/24","mtu":1400}`))
	f.Add(s)
	f.Add([]byte{1, 0xff, 0xff, 0xff})
	f.Add([]byte{1, 0, 0, 5, 1, 2})
	f.Add([]byte{0x12, 0, 0, 0, 0x13, 0, 0, 2, '{', '}'})
	f.Add([]byte{})
	b := NewBatch(4, Headroom+256)
	f.Fuzz(func(t *testing.T, in []byte) {
		// Next: never panics; payloads are within bounds and types valid.
		r := NewReader(bytes.NewReader(in), 0)
		total := 0
		for {
			typ, p, err := r.Next()
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrProtocol) {
					t.Fatalf("unexpected error class: %v", err)
				}
				break
			}
			if len(p) > MaxPayload || checkFrame(typ, len(p)) != nil {
				t.Fatalf("invalid frame returned: type %#x len %d", typ, len(p))
			}
			total += HeaderLen + len(p)
		}
		if total > len(in) {
			t.Fatalf("decoded %d bytes from %d", total, len(in))
		}
		// ReadBatch: never panics, sizes within bufs.
		r = NewReader(bytes.NewReader(in), 0)
		for range 1000 {
			n, err := r.ReadBatch(b.Bufs, b.Sizes, Headroom, func(byte, []byte) error { return nil })
			for i := range n {
				if b.Sizes[i] <= 0 || b.Sizes[i] > len(b.Bufs[i])-Headroom {
					t.Fatalf("bad size %d", b.Sizes[i])
				}
			}
			if err != nil {
				break
			}
		}
	})
}

func ExampleReader_ReadBatch() {
	var stream bytes.Buffer
	w := NewWriter(&stream, 0)
	b := NewBatch(2, Headroom+64)
	copy(b.Bufs[0][Headroom:], "packet one")
	copy(b.Bufs[1][Headroom:], "packet two")
	b.Sizes[0], b.Sizes[1] = 10, 10
	_ = w.WriteBatch(b.Bufs, b.Sizes, 2, Headroom)
	_ = w.WriteKeepalive()

	r := NewReader(&stream, 0)
	in := NewBatch(8, Headroom+64)
	n, err := r.ReadBatch(in.Bufs, in.Sizes, Headroom, func(typ byte, _ []byte) error {
		fmt.Println("control:", FrameName(typ))
		return nil
	})
	in.N = n
	fmt.Println(n, err)
	for _, p := range in.Packets(Headroom) {
		fmt.Println(string(p))
	}
	// Output:
	// control: keepalive
	// 2 <nil>
	// packet one
	// packet two
}

func TestBatchTrimRestore(t *testing.T) {
	b := NewBatch(3, 100)
	b.Sizes[0], b.Sizes[1] = 20, 40
	got := b.Trim(2, Headroom)
	if len(got) != 2 || len(got[0]) != Headroom+20 || len(got[1]) != Headroom+40 || len(b.Bufs[2]) != 100 {
		t.Fatalf("trim: lens %d %d %d", len(got[0]), len(got[1]), len(b.Bufs[2]))
	}
	got[0], got[1] = got[1], got[0] // a Write that swaps buffers while coalescing
	b.Restore()
	for i, buf := range b.Bufs {
		if len(buf) != 100 || cap(buf) != 100 {
			t.Fatalf("buf %d: len %d cap %d after Restore", i, len(buf), cap(buf))
		}
	}
}

// chunkReader returns at most the next of sizes bytes per Read (the last
// size repeating), like a stream that delivers a frame in pieces.
type chunkReader struct {
	data  []byte
	sizes []int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := c.sizes[0]
	if len(c.sizes) > 1 {
		c.sizes = c.sizes[1:]
	}
	n = min(n, len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// readAll decodes every packet of a stream with ReadPackets (GSO allowed)
// and returns them as frames (FrameDataGSO payloads with their header) and
// the error that ended the stream.
func readAll(t *testing.T, src io.Reader, directMin int) ([][]byte, error) {
	t.Helper()
	r := NewReader(src, 0)
	r.directMin = directMin
	b := NewBatch(4, Headroom+MaxPacket)
	var out [][]byte
	for range 1000 {
		n, err := r.ReadPackets(b.Bufs, b.Sizes, b.GSO, Headroom, nil)
		for i := range n {
			start := Headroom
			if b.GSO[i] {
				start -= VnetHdrLen
			}
			out = append(out, bytes.Clone(b.Bufs[i][start:Headroom+b.Sizes[i]]))
		}
		if err != nil {
			return out, err
		}
	}
	t.Fatal("stream did not end")
	return nil, nil
}

// TestReadPacketsDirect checks that large frames read straight into the
// caller's buffer (not yet buffered) decode exactly like frames decoded in
// place, however the stream cuts them, and fail the same way.
func TestReadPacketsDirect(t *testing.T) {
	big, gsoBig := pkt(directFrame+500, 1), append(make([]byte, VnetHdrLen), pkt(MaxPacket, 2)...)
	gsoBig[0] = 1
	var stream []byte
	stream = mustFrame(t, stream, FrameData, pkt(100, 3))
	stream = mustFrame(t, stream, FrameData, big)
	stream = mustFrame(t, stream, FrameKeepalive, nil)
	stream = mustFrame(t, stream, FrameDataGSO, gsoBig)
	stream = mustFrame(t, stream, FrameData, pkt(60, 4))
	stream = mustFrame(t, stream, FrameData, big)
	want := [][]byte{pkt(100, 3), big, gsoBig, pkt(60, 4), big}

	for _, tt := range []struct {
		name  string
		sizes []int
	}{
		{"whole", []int{len(stream)}},
		{"1000-byte pieces", []int{1000}},
		{"header then body", []int{HeaderLen + 100, HeaderLen, directFrame + 500, HeaderLen}},
		{"7-byte pieces", []int{7}},
		{"record-sized pieces", []int{16 << 10}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readAll(t, &chunkReader{data: bytes.Clone(stream), sizes: tt.sizes}, directFrame)
			if err != io.EOF {
				t.Fatalf("err = %v, want io.EOF", err)
			}
			if len(got) != len(want) {
				t.Fatalf("%d packets, want %d", len(got), len(want))
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("packet %d differs (%d vs %d bytes)", i, len(got[i]), len(want[i]))
				}
			}
		})
	}

	cut := mustFrame(t, nil, FrameData, big)
	gsoFrame := mustFrame(t, nil, FrameDataGSO, gsoBig)
	for _, tt := range []struct {
		name   string
		stream []byte
		gso    bool
		bufLen int
		want   string
	}{
		{"truncated", cut[:len(cut)-10], true, MaxPacket, "truncated frame"},
		{"gso not negotiated", gsoFrame, false, MaxPacket, "without the gso capability"},
		{"too large for buffer", cut, true, directFrame, "does not fit"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(&chunkReader{data: tt.stream, sizes: []int{1000}}, 0)
			b := NewBatch(2, Headroom+tt.bufLen)
			var gso []bool
			if tt.gso {
				gso = b.GSO
			}
			n, err := r.ReadPackets(b.Bufs, b.Sizes, gso, Headroom, nil)
			if n != 0 || err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("n=%d err=%v, want error containing %q", n, err, tt.want)
			}
			if _, again := r.ReadPackets(b.Bufs, b.Sizes, gso, Headroom, nil); again == nil || again.Error() != err.Error() {
				t.Fatalf("error not sticky: %v then %v", err, again)
			}
		})
	}
}

// FuzzReaderDirect decodes the same bytes whole without direct reads, and
// in 7-byte pieces with direct reads from 16-byte frames up: the packets and
// the class of the final error must agree.
func FuzzReaderDirect(f *testing.F) {
	var s []byte
	s, _ = AppendFrame(s, FrameData, pkt(100, 1))
	s, _ = AppendFrame(s, FrameData, pkt(8, 2))
	s, _ = AppendFrame(s, FrameKeepalive, nil)
	f.Add(s)
	f.Add(s[:len(s)-50])
	g, _ := AppendFrame(nil, FrameDataGSO, pkt(40, 3))
	f.Add(g)
	f.Add([]byte{1, 0, 0x40, 0, 1, 2, 3})
	f.Fuzz(func(t *testing.T, in []byte) {
		a, errA := readAll(t, bytes.NewReader(in), MaxPayload+1)
		b, errB := readAll(t, &chunkReader{data: in, sizes: []int{7}}, 16)
		if len(a) != len(b) {
			t.Fatalf("%d packets whole, %d in pieces", len(a), len(b))
		}
		for i := range a {
			if !bytes.Equal(a[i], b[i]) {
				t.Fatalf("packet %d differs", i)
			}
		}
		// A truncated frame too large for the buffer may be reported
		// either way: decoding in place needs it whole first, a direct
		// read checks the room first.
		noRoom := func(err error) bool { return strings.Contains(err.Error(), "does not fit") }
		if (errA == io.EOF) != (errB == io.EOF) ||
			errors.Is(errA, ErrProtocol) != errors.Is(errB, ErrProtocol) && !noRoom(errA) && !noRoom(errB) {
			t.Fatalf("errors differ: %v / %v", errA, errB)
		}
	})
}
