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
 */

package tunnel

import (
	"bufio"
	"fmt"
	"io"
	"sync"
)

// Writer encodes frames onto a stream. It is safe for concurrent use: each
// call writes whole frames under a mutex and ends with one flush.
type Writer struct {
	mu  sync.Mutex
	w   io.Writer
	bw  *bufio.Writer
	hdr [HeaderLen]byte
}

// NewWriter returns a Writer buffering up to bufSize bytes (at least
// MinReadBuffer) before writing to w.
func NewWriter(w io.Writer, bufSize int) *Writer {
	if bufSize < MinReadBuffer {
		bufSize = MinReadBuffer
	}
	return &Writer{w: w, bw: bufio.NewWriterSize(w, bufSize)}
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
				return fmt.Errorf("flush data frames: %w", err)
			}
			if _, err := w.w.Write(frame); err != nil {
				return fmt.Errorf("write data frame: %w", err)
			}
			continue
		}
		putHeader(w.hdr[:], typ, end-start)
		if _, err := w.bw.Write(w.hdr[:]); err != nil {
			return fmt.Errorf("write data frame: %w", err)
		}
		if _, err := w.bw.Write(bufs[i][start:end]); err != nil {
			return fmt.Errorf("write data frame: %w", err)
		}
	}
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("flush data frames: %w", err)
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
	putHeader(w.hdr[:], typ, len(payload))
	if _, err := w.bw.Write(w.hdr[:]); err != nil {
		return fmt.Errorf("write %s frame: %w", FrameName(typ), err)
	}
	if _, err := w.bw.Write(payload); err != nil {
		return fmt.Errorf("write %s frame: %w", FrameName(typ), err)
	}
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("flush %s frame: %w", FrameName(typ), err)
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
