/* Frame writer: the sending half of the pipeline (TUN -> TLS).
 *
 * A relay goroutine reads a batch of packets from the Device into pooled
 * buffers that keep Headroom bytes free in front of each packet, then hands
 * the whole batch to Writer.WriteBatch, which frames every small packet into
 * one bufio.Writer and flushes once, so TLS sees one large write (few, full
 * records) per batch instead of one record per packet. A frame of
 * directFrame bytes or more (a GSO super-packet) already fills records on
 * its own: it gets its header in the headroom and goes to TLS straight from
 * its buffer, without the copy into the bufio.Writer. Control frames
 * (keepalive, close) take the same mutex and flush at once. The format is
 * in frame.go.
 *
 * The bufio.Writer is not the Writer's own: each call takes one from a
 * shared pool (pool.go) and gives it back before returning, so an idle
 * session holds no encode buffer. Every write runs under a deadline
 * (SetTimeout): a peer that stops reading fails the call with ErrStalled
 * instead of blocking it, and whoever waits for the Writer, forever. The
 * session timers never take the Writer's lock to wait: they send
 * keepalives with TryWriteControl and watch Busy.
 */

package tunnel

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Writer encodes frames onto a stream. It is safe for concurrent use: each
// call writes whole frames under a mutex and ends with one flush. Its
// encode buffer comes from a shared pool for the duration of one call, so
// an idle Writer holds none.
//
// With SetTimeout, every write to the stream is bounded: a peer that stops
// reading makes the call fail with an error wrapping ErrStalled instead of
// blocking forever (and keeping the mutex). Busy tells a watchdog how long
// the current call has been writing; TryWriteControl sends a frame only if
// no other call is writing (a keepalive is pointless behind one); Finish
// sends a last frame within a bounded time even while another call is
// blocked, and closes the Writer.
type Writer struct {
	mu    sync.Mutex
	w     io.Writer
	pool  *sync.Pool    // *bufio.Writer of the Writer's buffer size
	bw    *bufio.Writer // taken from pool for one call (mu held)
	hdr   [HeaderLen]byte
	small [HeaderLen + smallControl]byte // control frames that fit skip the pool

	dl      writeDeadliner
	timeout time.Duration
	dlMu    sync.Mutex   // orders arming against Finish
	closed  atomic.Bool  // Finish was called
	since   atomic.Int64 // unix nanos the current call started writing; 0 when idle
}

// smallControl is the largest control payload written without a pooled
// buffer (keepalive, close).
const smallControl = 256

// writeDeadliner is the part of net.Conn (and tls.Conn) SetTimeout needs.
type writeDeadliner interface {
	SetWriteDeadline(t time.Time) error
}

// ErrStalled is wrapped by the error of a write that timed out (see
// SetTimeout): the peer stopped reading.
var ErrStalled = errors.New("stream stalled: peer not reading")

// ErrWriterClosed is returned by every call after Finish.
var ErrWriterClosed = errors.New("frame writer closed")

// SessionWriter is how a session writes to its peer, on either side and
// whatever the path: rounds of packets (Round), control frames, the last
// Close, and the stall clock. *Writer (the TLS stream) and the datagram
// path's masque.Link are ones.
type SessionWriter interface {
	PacketWriter
	WriteControl(typ byte, payload []byte) error
	TryWriteControl(typ byte, payload []byte) (sent bool, err error)
	Finish(typ byte, payload []byte, d time.Duration) error
	Busy(now time.Time) time.Duration
}

var _ SessionWriter = (*Writer)(nil)

// NewWriter returns a Writer buffering up to bufSize bytes (at least
// MinReadBuffer) before writing to w.
func NewWriter(w io.Writer, bufSize int) *Writer {
	if bufSize < MinReadBuffer {
		bufSize = MinReadBuffer
	}
	return &Writer{w: w, pool: writeBufs.get(bufSize)}
}

// SetTimeout bounds every later write call: before writing, it sets conn's
// write deadline to now+d (conn is normally the stream the Writer writes
// to). A write still blocked at the deadline fails with ErrStalled. d <= 0
// turns deadlines off. It may be called at any time, also while the
// Writer is in use.
func (w *Writer) SetTimeout(conn writeDeadliner, d time.Duration) {
	w.dlMu.Lock()
	defer w.dlMu.Unlock()
	w.dl, w.timeout = conn, d
	if d <= 0 {
		w.dl = nil
	}
}

// Busy returns how long the call now holding the Writer has been writing,
// or 0 when none is. It does not wait for the Writer's lock.
func (w *Writer) Busy(now time.Time) time.Duration {
	s := w.since.Load()
	if s == 0 {
		return 0
	}
	return now.Sub(time.Unix(0, s))
}

// begin arms the deadline for a call that holds mu and takes an encode
// buffer.
func (w *Writer) begin(buffered bool) error {
	now := time.Now()
	w.dlMu.Lock()
	var err error
	switch {
	case w.closed.Load():
		err = ErrWriterClosed
	case w.dl != nil:
		err = w.dl.SetWriteDeadline(now.Add(w.timeout))
	}
	w.dlMu.Unlock()
	if err != nil {
		return err
	}
	w.since.Store(now.UnixNano())
	if buffered {
		w.bw = w.pool.Get().(*bufio.Writer)
		w.bw.Reset(w.w)
	}
	return nil
}

// end gives the encode buffer back (its unflushed bytes, only there after
// an error, are dropped: the stream is broken then anyway).
func (w *Writer) end() {
	w.since.Store(0)
	if w.bw != nil {
		w.bw.Reset(nil)
		w.pool.Put(w.bw)
		w.bw = nil
	}
}

// stalled marks an error from the stream caused by the write deadline.
func stalled(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrStalled, err)
	}
	return err
}

// WriteBatch writes bufs[i][offset:offset+sizes[i]] for i < n as data frames
// and flushes once. The whole batch is validated first, so a bad entry
// (empty, too large, out of range) writes nothing. A frame of directFrame
// bytes or more is written straight from its buffer, its header stored in
// the HeaderLen bytes in front of it when offset leaves room for them;
// nothing else in bufs is modified.
func (w *Writer) WriteBatch(bufs [][]byte, sizes []int, n int, offset int) error {
	return w.WritePackets(bufs, sizes, nil, n, offset)
}

// WritePackets is WriteBatch for a batch that may hold GSO packets: where
// gso[i] is true, the virtio-net header in the VnetHdrLen bytes before the
// packet is sent with it as a FrameDataGSO (offset must leave room for it).
// gso may be nil.
func (w *Writer) WritePackets(bufs [][]byte, sizes []int, gso []bool, n int, offset int) error {
	if n < 0 || n > len(bufs) || n > len(sizes) || offset < 0 || (gso != nil && n > len(gso)) {
		return fmt.Errorf("write batch: n=%d offset=%d out of range (bufs %d, sizes %d)", n, offset, len(bufs), len(sizes))
	}
	for i := 0; i < n; i++ {
		s := sizes[i]
		limit := MaxPayload
		if gso != nil && gso[i] {
			limit = MaxPacket
		}
		if s <= 0 || s > limit || offset+s > len(bufs[i]) || (limit == MaxPacket && offset < VnetHdrLen) {
			return fmt.Errorf("write batch: packet %d: size %d at offset %d does not fit buffer of %d (max %d)", i, s, offset, len(bufs[i]), limit)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.begin(true); err != nil {
		return fmt.Errorf("write data frames: %w", err)
	}
	defer w.end()
	for i := 0; i < n; i++ {
		typ, start := FrameData, offset
		if gso != nil && gso[i] {
			typ, start = FrameDataGSO, offset-VnetHdrLen
		}
		end := offset + sizes[i]
		if end-start >= directFrame && start >= HeaderLen {
			// A large frame goes to the stream straight from its buffer,
			// header in the room in front of it: one pass over the bytes
			// (TLS's encryption) instead of two.
			frame := bufs[i][start-HeaderLen : end]
			putHeader(frame, typ, end-start)
			if err := w.bw.Flush(); err != nil {
				return fmt.Errorf("flush data frames: %w", stalled(err))
			}
			if _, err := w.w.Write(frame); err != nil {
				return fmt.Errorf("write data frame: %w", stalled(err))
			}
			continue
		}
		putHeader(w.hdr[:], typ, end-start)
		if _, err := w.bw.Write(w.hdr[:]); err != nil {
			return fmt.Errorf("write data frame: %w", stalled(err))
		}
		if _, err := w.bw.Write(bufs[i][start:end]); err != nil {
			return fmt.Errorf("write data frame: %w", stalled(err))
		}
	}
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("flush data frames: %w", stalled(err))
	}
	return nil
}

// WriteControl writes one frame of any valid type (normally a control type)
// and flushes.
func (w *Writer) WriteControl(typ byte, payload []byte) error {
	if err := checkFrame(typ, len(payload)); err != nil {
		return fmt.Errorf("write %s frame: %w", FrameName(typ), err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writeControlLocked(typ, payload, true)
}

// TryWriteControl is WriteControl that gives up at once, with sent false
// and no error, when another call holds the Writer (is writing). The
// session timers send keepalives with it so that they never wait behind a
// blocked writer.
func (w *Writer) TryWriteControl(typ byte, payload []byte) (sent bool, err error) {
	if err := checkFrame(typ, len(payload)); err != nil {
		return false, fmt.Errorf("write %s frame: %w", FrameName(typ), err)
	}
	if !w.mu.TryLock() {
		return false, nil
	}
	defer w.mu.Unlock()
	return true, w.writeControlLocked(typ, payload, true)
}

// Finish writes one last frame and closes the Writer: every later call
// fails with ErrWriterClosed. With SetTimeout, the stream's write deadline
// is first cut to now+d, which also ends a call blocked in a write, so
// Finish returns within about d even when the peer stopped reading.
func (w *Writer) Finish(typ byte, payload []byte, d time.Duration) error {
	if err := checkFrame(typ, len(payload)); err != nil {
		return fmt.Errorf("write %s frame: %w", FrameName(typ), err)
	}
	w.dlMu.Lock()
	if w.closed.Load() {
		w.dlMu.Unlock()
		return ErrWriterClosed
	}
	w.closed.Store(true)
	var err error
	if w.dl != nil {
		err = w.dl.SetWriteDeadline(time.Now().Add(d))
	}
	w.dlMu.Unlock()
	if err != nil {
		return fmt.Errorf("write %s frame: %w", FrameName(typ), err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writeControlLocked(typ, payload, false)
}

// writeControlLocked writes one checked frame; mu is held. arm is false
// only for Finish, which set its own deadline.
func (w *Writer) writeControlLocked(typ byte, payload []byte, arm bool) (err error) {
	small := HeaderLen+len(payload) <= len(w.small)
	if arm {
		err = w.begin(!small)
	} else {
		w.since.Store(time.Now().UnixNano())
		if !small {
			w.bw = w.pool.Get().(*bufio.Writer)
			w.bw.Reset(w.w)
		}
	}
	if err != nil {
		return fmt.Errorf("write %s frame: %w", FrameName(typ), err)
	}
	defer w.end()
	if small {
		putHeader(w.small[:], typ, len(payload))
		k := copy(w.small[HeaderLen:], payload)
		if _, err := w.w.Write(w.small[:HeaderLen+k]); err != nil {
			return fmt.Errorf("write %s frame: %w", FrameName(typ), stalled(err))
		}
		return nil
	}
	putHeader(w.hdr[:], typ, len(payload))
	if _, err := w.bw.Write(w.hdr[:]); err != nil {
		return fmt.Errorf("write %s frame: %w", FrameName(typ), stalled(err))
	}
	if _, err := w.bw.Write(payload); err != nil {
		return fmt.Errorf("write %s frame: %w", FrameName(typ), stalled(err))
	}
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("flush %s frame: %w", FrameName(typ), stalled(err))
	}
	return nil
}

// WriteHello encodes h and writes it as a Hello frame.
func (w *Writer) WriteHello(h Hello) error {
	b, err := EncodeHello(h)
	if err != nil {
		return err
	}
	return w.WriteControl(FrameHello, b)
}

// WriteConfig encodes c and writes it as a Config frame.
func (w *Writer) WriteConfig(c Config) error {
	b, err := EncodeConfig(c)
	if err != nil {
		return err
	}
	return w.WriteControl(FrameConfig, b)
}

// WriteClose writes a Close frame carrying reason.
func (w *Writer) WriteClose(reason string) error {
	b, err := EncodeClose(CloseMsg{Reason: reason})
	if err != nil {
		return err
	}
	return w.WriteControl(FrameClose, b)
}

// WriteKeepalive writes an empty Keepalive frame.
func (w *Writer) WriteKeepalive() error {
	return w.WriteControl(FrameKeepalive, nil)
}
