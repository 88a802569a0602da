package masque

// Link: one CONNECT-IP request stream as the data plane sees it, on both
// ends (the gateway's datagram sessions, the laptop's datagram path).
//
//   egress   tunnel.Round.Write -> Link.WritePackets: one HTTP datagram per
//            packet, the context ID written into the byte in front of the
//            packet (its headroom), so nothing is copied here (quic-go
//            copies once into its frame). A packet larger than the datagram
//            the path takes now goes to TooBig instead (the owner answers
//            with ICMP Packet Too Big / Fragmentation Needed).
//   ingress  Wait waits for one datagram of the stream without holding the
//            relay's batch; ReadPackets takes it and what else is queued
//            without waiting (one batch), so the TUN write after it is
//            batched (GRO) like the TLS stream's; no goroutine or queue of
//            its own between http3's and the relay. Link is a
//            tunnel.DatagramReader: the relays hand it to
//            tunnel.Inbound.ReadDatagrams.
//   control  capsules on the stream: WriteControl/Finish send a sallyport
//            control frame in CapsuleSallyport (under one lock, with the
//            write deadline of the session timeout), WriteCapsule the
//            CONNECT-IP ones, NextCapsule reads them.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
)

// Stream is an HTTP/3 request stream with datagrams: *http3.Stream on the
// gateway, *http3.RequestStream on the laptop.
type Stream interface {
	io.Reader
	io.Writer
	SendDatagram([]byte) error
	ReceiveDatagram(context.Context) ([]byte, error)
	SetWriteDeadline(time.Time) error
}

// ErrStalled is returned by a control write that hit its deadline.
var ErrStalled = errors.New("peer stopped reading the CONNECT-IP stream")

// Link is one CONNECT-IP session's stream.
type Link struct {
	str Stream
	br  *bufio.Reader
	buf []byte // capsule read buffer (NextCapsule's caller owns the value until the next call)

	// first is the datagram Wait received for the next ReadPackets
	// (waited: it did); only the reading goroutine touches them.
	first  []byte
	waited bool

	// TooBig, if set, gets each packet WritePackets could not send because
	// it is larger than mtu, the largest IP packet the path takes now.
	TooBig func(pkt []byte, mtu int)

	// direct, when set (Direct), is the QUIC connection WritePackets sends
	// on itself, qsid the stream's quarter stream ID (one varint byte).
	direct *quic.Conn
	qsid   byte

	wmu     sync.Mutex
	timeout time.Duration
	since   atomic.Int64 // unix nanos when the control write in progress began; 0 = none
}

// NewLink wraps str.
func NewLink(str Stream) *Link {
	return &Link{str: str, br: bufio.NewReaderSize(str, 4096)}
}

// SetTimeout makes every control write give up after d (0: never).
func (l *Link) SetTimeout(d time.Duration) { l.timeout = d }

// Direct makes WritePackets put each datagram on conn itself, the quarter
// stream ID of streamID and the context ID written into the packet's
// headroom: http3's SendDatagram allocates and copies every datagram to put
// that prefix in front, and quic-go copies it once more. Only for the first
// 64 request streams (a one-byte quarter stream ID), the only ones a
// session uses; for others sends keep going through the stream. (Receiving
// stays with http3, which consumes the connection's datagrams once the
// peer announced them.)
func (l *Link) Direct(conn *quic.Conn, streamID quic.StreamID) {
	if q := uint64(streamID) / 4; streamID >= 0 && q < 64 {
		l.direct, l.qsid = conn, byte(q)
	}
}

// pollContext has its Done closed and no error: http3's ReceiveDatagram
// then returns a queued datagram, or nil and no error at once when none
// is queued (a receive that does not block).
type pollContext struct{ context.Context }

var closedDone = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (pollContext) Done() <-chan struct{} { return closedDone }
func (pollContext) Err() error            { return nil }

var poll = pollContext{context.Background()}

// WritePackets sends the first n packets, each at offset in its buffer,
// as one datagram each. gso packets (super-packets) cannot be sent whole
// and must have been segmented (tunnel.Round does, for a peer without
// gso); any left is dropped. It fails only when the session is over.
func (l *Link) WritePackets(bufs [][]byte, sizes []int, gso []bool, n int, offset int) error {
	for i := 0; i < n; i++ {
		if gso != nil && gso[i] {
			continue
		}
		var err error
		prefix := ContextIDLen // what http3 adds in front is counted in its error
		if l.direct != nil {
			b := bufs[i][offset-quarterIDLen-ContextIDLen : offset+sizes[i]]
			b[0], b[1] = l.qsid, 0 // quarter stream ID; context ID 0: an IP packet
			err = l.direct.SendDatagram(b)
			prefix = quarterIDLen + ContextIDLen
		} else {
			b := bufs[i][offset-ContextIDLen : offset+sizes[i]]
			b[0] = 0 // context ID 0: an IP packet
			err = l.str.SendDatagram(b)
			prefix += quarterIDLen
		}
		if err == nil {
			continue
		}
		if tl, ok := errors.AsType[*quic.DatagramTooLargeError](err); ok {
			if l.TooBig != nil {
				l.TooBig(bufs[i][offset:offset+sizes[i]], int(tl.MaxDatagramPayloadSize)-prefix)
			}
			continue
		}
		return err
	}
	return nil
}

// quarterIDLen is the length of the quarter stream ID http3 puts in front
// of a datagram: one byte for the first 64 request streams, the only ones
// a session uses.
const quarterIDLen = 1

// hugeDatagram is never sent, only offered to learn the datagram size.
var hugeDatagram [1 << 16]byte

// MaxPacket is the largest IP packet a datagram on conn carries now: the
// QUIC datagram size (which path-MTU discovery raises) less the quarter
// stream ID and the context ID. 0 when conn has no datagrams.
func MaxPacket(conn *quic.Conn) int {
	err := conn.SendDatagram(hugeDatagram[:]) // larger than any datagram: refused before anything is sent or copied
	if tl, ok := errors.AsType[*quic.DatagramTooLargeError](err); ok {
		return max(int(tl.MaxDatagramPayloadSize)-quarterIDLen-ContextIDLen, 0)
	}
	return 0
}

// WriteControl sends one sallyport control frame in a CapsuleSallyport.
func (l *Link) WriteControl(typ byte, payload []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	return l.writeLocked(CapsuleSallyport, frame(typ, payload), l.timeout)
}

// TryWriteControl is WriteControl when no other control write is in
// progress; sent is false otherwise.
func (l *Link) TryWriteControl(typ byte, payload []byte) (sent bool, err error) {
	if !l.wmu.TryLock() {
		return false, nil
	}
	defer l.wmu.Unlock()
	return true, l.writeLocked(CapsuleSallyport, frame(typ, payload), l.timeout)
}

// Finish sends a last control frame within d (the Close before hanging up).
func (l *Link) Finish(typ byte, payload []byte, d time.Duration) error {
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		l.wmu.Lock()
		defer l.wmu.Unlock()
		err = l.writeLocked(CapsuleSallyport, frame(typ, payload), d)
	}()
	select {
	case <-done:
		return err
	case <-time.After(d + 100*time.Millisecond): // a write stuck behind another
		return ErrStalled
	}
}

// WriteCapsule sends one capsule of any type (ADDRESS_ASSIGN, ...).
func (l *Link) WriteCapsule(typ uint64, value []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	return l.writeLocked(typ, value, l.timeout)
}

// Busy is how long the control write in progress has been blocked (0 when
// none is).
func (l *Link) Busy(now time.Time) time.Duration {
	if t := l.since.Load(); t != 0 {
		return now.Sub(time.Unix(0, t))
	}
	return 0
}

func (l *Link) writeLocked(typ uint64, value []byte, d time.Duration) error {
	if d > 0 {
		_ = l.str.SetWriteDeadline(time.Now().Add(d))
		defer func() { _ = l.str.SetWriteDeadline(time.Time{}) }()
	}
	l.since.Store(time.Now().UnixNano())
	defer l.since.Store(0)
	_, err := l.str.Write(AppendCapsule(nil, typ, value))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrStalled, err)
	}
	return err
}

// frame is a sallyport frame (tunnel/frame.go: type, 24-bit length,
// payload) as a capsule value. Control payloads are small JSON.
func frame(typ byte, payload []byte) []byte {
	n := len(payload)
	b := make([]byte, 4, 4+n)
	b[0], b[1], b[2], b[3] = typ, byte(n>>16), byte(n>>8), byte(n)
	return append(b, payload...)
}

// ParseFrame splits a CapsuleSallyport value into the frame's type and
// payload; the length must match the capsule's. Whether the type and
// payload are acceptable is the caller's to check (tunnel's decoders).
func ParseFrame(v []byte) (typ byte, payload []byte, err error) {
	if len(v) < 4 {
		return 0, nil, fmt.Errorf("%w: sallyport capsule of %d bytes", ErrFormat, len(v))
	}
	n := int(v[1])<<16 | int(v[2])<<8 | int(v[3])
	if n != len(v)-4 {
		return 0, nil, fmt.Errorf("%w: sallyport frame of %d bytes in a capsule of %d", ErrFormat, n, len(v)-4)
	}
	return v[0], v[4:], nil
}

// NextCapsule reads the next capsule from the stream; value is valid until
// the next call. Call it from one goroutine.
func (l *Link) NextCapsule() (typ uint64, value []byte, err error) {
	typ, value, err = ReadCapsule(l.br, l.buf)
	if cap(value) > cap(l.buf) {
		l.buf = value[:0]
	}
	return typ, value, err
}

// Wait blocks until a datagram of the stream has arrived (it is kept for
// the next ReadPackets) or the stream ended, and returns the stream's
// error then. It holds nothing of the caller's, so a relay takes its
// batch only once there is something to read into it: an idle session
// holds none. Call it from the goroutine that calls ReadPackets.
func (l *Link) Wait() error {
	if l.waited {
		return nil
	}
	d, err := l.str.ReceiveDatagram(context.Background()) // ends with the stream
	if err != nil {
		return err
	}
	l.first, l.waited = d, true
	return nil
}

// ReadPackets waits for a datagram of the stream (or takes the one Wait
// kept), then takes what else is queued without waiting, and copies the
// IP packets of up to len(bufs) of them to offset in bufs, their lengths
// in sizes. Datagrams of another context, empty ones and packets larger
// than a buffer are skipped (bad counts them). It returns the stream's
// error, with n == 0, once it ended.
func (l *Link) ReadPackets(bufs [][]byte, sizes []int, offset int) (n, bad int, err error) {
	var d []byte
	if l.waited {
		d, l.first, l.waited = l.first, nil, false
	} else {
		d, err = l.str.ReceiveDatagram(context.Background()) // ends with the stream
	}
	for err == nil && d != nil {
		pkt, ok := Packet(d)
		if ok && offset+len(pkt) <= len(bufs[n]) {
			sizes[n] = copy(bufs[n][offset:], pkt)
			n++
		} else {
			bad++
		}
		if n == len(bufs) {
			break
		}
		d, err = l.str.ReceiveDatagram(poll)
	}
	if n > 0 || bad > 0 {
		return n, bad, nil
	}
	return 0, 0, err
}
