/* Frame reader: the receiving half of the pipeline (TLS -> TUN).
 *
 * A relay goroutine calls Reader.ReadBatch, which decodes frames in place
 * out of one large bufio.Reader (Peek/Discard, no per-frame allocation),
 * copies data payloads into the caller's batch buffers at the device offset,
 * passes control frames to a callback, and keeps gathering while more frames
 * are already buffered (and the batch has room). A large data frame not yet
 * buffered whole is read from TLS straight into the batch buffer instead, so
 * a super-packet is copied once, not twice. The caller then makes one
 * Device.Write of the whole batch, which is what lets the Linux TUN driver
 * coalesce TCP segments (GRO) on the way in. The format is in frame.go.
 */

package tunnel

import (
	"bufio"
	"fmt"
	"io"
)

// Reader decodes frames from a stream in place. It is for one goroutine.
// After the first error every later call returns the same error.
type Reader struct {
	src       io.Reader
	br        *bufio.Reader
	pending   int // bytes of the last returned frame still to discard
	err       error
	directMin int // data frames from this size are read past br (tests lower it)
}

// NewReader returns a Reader over r with a buffer of bufSize bytes (raised
// to MinReadBuffer when smaller, so a maximal frame fits).
func NewReader(r io.Reader, bufSize int) *Reader {
	if bufSize < MinReadBuffer {
		bufSize = MinReadBuffer
	}
	return &Reader{src: r, br: bufio.NewReaderSize(r, bufSize), directMin: directFrame}
}

func (r *Reader) release() {
	if r.pending > 0 {
		// The bytes were peeked, so Discard cannot fail.
		r.br.Discard(r.pending)
		r.pending = 0
	}
}

// Buffered returns the number of bytes already read from the stream and not
// yet returned as frames (excluding the frame last returned by Next).
func (r *Reader) Buffered() int {
	return r.br.Buffered() - r.pending
}

// Next returns the next frame. payload aliases the Reader's buffer and is
// valid only until the next call on r. At a clean end of stream (between
// frames) it returns io.EOF; a stream ending inside a frame yields an error
// wrapping ErrProtocol and io.ErrUnexpectedEOF.
func (r *Reader) Next() (typ byte, payload []byte, err error) {
	if r.err != nil {
		return 0, nil, r.err
	}
	r.release()
	typ, payload, err = r.next()
	if err != nil {
		r.err = err
	}
	return typ, payload, err
}

func (r *Reader) next() (byte, []byte, error) {
	h, err := r.br.Peek(HeaderLen)
	if err != nil {
		if err == io.EOF {
			if len(h) == 0 {
				return 0, nil, io.EOF
			}
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("read frame header: %w", truncated(err))
	}
	typ, n := parseHeader(h)
	if err := checkFrame(typ, n); err != nil {
		return 0, nil, err
	}
	f, err := r.br.Peek(HeaderLen + n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, fmt.Errorf("read %s frame of %d bytes: %w", FrameName(typ), n, truncated(err))
	}
	r.pending = HeaderLen + n
	return typ, f[HeaderLen:], nil
}

// truncated marks a short read as a protocol violation while keeping the
// underlying error visible to errors.Is.
func truncated(err error) error {
	if err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: truncated frame: %w", ErrProtocol, err)
	}
	return err
}

// ReadBatch blocks until at least one frame arrives, then keeps decoding
// while more bytes are already buffered and bufs has room. Each data payload
// is copied to bufs[i][offset:] and its length stored in sizes[i]; control
// frames are passed to control (payload valid only during the call; a nil
// control ignores them). It returns the number of packets gathered, which
// is 0 when only control frames were read (so the caller can act on a Close
// or check its timers). An error that occurs after some packets were
// gathered is held back: those packets are returned with a nil error and the
// error comes on the next call. An error returned by control is returned
// the same way. A packet larger than len(bufs[i])-offset is an error.
func (r *Reader) ReadBatch(bufs [][]byte, sizes []int, offset int, control func(typ byte, payload []byte) error) (int, error) {
	return r.ReadPackets(bufs, sizes, nil, offset, control)
}

// ReadPackets is ReadBatch that also accepts FrameDataGSO: such a packet is
// stored at bufs[i][offset:] with its virtio-net header in the VnetHdrLen
// bytes before it, and gso[i] set (cleared for plain packets). With a nil
// gso, a FrameDataGSO is a protocol error (the capability was not
// negotiated). The header is not validated here; see ValidateVnet.
func (r *Reader) ReadPackets(bufs [][]byte, sizes []int, gso []bool, offset int, control func(typ byte, payload []byte) error) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	limit := min(len(bufs), len(sizes))
	if limit == 0 || offset < 0 {
		return 0, fmt.Errorf("read batch: no room (bufs %d, sizes %d, offset %d)", len(bufs), len(sizes), offset)
	}
	n, frames := 0, 0
	for n < limit {
		if frames > 0 {
			r.release()
			if r.br.Buffered() == 0 {
				break
			}
		}
		typ, size, direct, err := r.direct()
		if err != nil {
			return r.fail(n, err)
		}
		if direct {
			// A data frame of directFrame bytes or more that the buffer
			// does not hold yet: read straight into bufs[n].
			frames++
			dst, pkt, err := slot(typ, size, bufs[n], offset, gso, n)
			if err == nil {
				err = r.readDirect(typ, dst)
			}
			if err != nil {
				return r.fail(n, err)
			}
			sizes[n] = pkt
			markGSO(gso, n, typ)
			n++
			continue
		}
		typ, p, err := r.Next()
		if err != nil {
			return r.fail(n, err)
		}
		frames++
		if typ != FrameData && typ != FrameDataGSO {
			if control != nil {
				if err := control(typ, p); err != nil {
					return r.fail(n, err)
				}
			}
			continue
		}
		dst, pkt, err := slot(typ, len(p), bufs[n], offset, gso, n)
		if err != nil {
			return r.fail(n, err)
		}
		copy(dst, p)
		sizes[n] = pkt
		markGSO(gso, n, typ)
		n++
	}
	return n, nil
}

// slot returns where the n-byte payload of data frame typ goes in buf: at
// offset, or for a FrameDataGSO VnetHdrLen bytes before it (its virtio-net
// header first, which needs the negotiated gso slice), and the size of the
// packet it carries.
func slot(typ byte, n int, buf []byte, offset int, gso []bool, i int) ([]byte, int, error) {
	size, start := n, offset
	if typ == FrameDataGSO {
		if gso == nil || i >= len(gso) || offset < VnetHdrLen {
			return nil, 0, fmt.Errorf("%w: data-gso frame without the gso capability", ErrProtocol)
		}
		size, start = n-VnetHdrLen, offset-VnetHdrLen
	}
	if offset > len(buf) || size > len(buf)-offset {
		return nil, 0, fmt.Errorf("read batch: %d-byte packet does not fit %d-byte buffer at offset %d", size, len(buf), offset)
	}
	return buf[start : start+n], size, nil
}

// markGSO records in gso (when there is one) whether packet i came as a
// FrameDataGSO.
func markGSO(gso []bool, i int, typ byte) {
	if i < len(gso) {
		gso[i] = typ == FrameDataGSO
	}
}

// direct reports whether the next frame is a data frame of directFrame
// bytes or more that is not wholly buffered yet, with its type and payload
// length. Such a frame is read (readDirect) from the stream straight into
// the caller's buffer, skipping the copy through the Reader's buffer: on
// the laptop during a download that copy was 5% of the process. Smaller
// frames, and frames already buffered, are decoded in place by Next.
func (r *Reader) direct() (typ byte, n int, ok bool, err error) {
	r.release()
	h, err := r.br.Peek(HeaderLen)
	if err != nil {
		return 0, 0, false, nil // Next reports it with the usual wording
	}
	typ, n = parseHeader(h)
	if typ != FrameData && typ != FrameDataGSO || n < r.directMin || r.br.Buffered() >= HeaderLen+n {
		return 0, 0, false, nil
	}
	return typ, n, true, checkFrame(typ, n)
}

// readDirect consumes the frame direct found, its payload into dst (of the
// payload's length): what is buffered, then the rest from the stream.
func (r *Reader) readDirect(typ byte, dst []byte) error {
	r.br.Discard(HeaderLen)
	k := 0
	if r.br.Buffered() > 0 {
		// Only what is buffered (less than the frame): with an empty
		// buffer bufio would read through its own buffer, a copy.
		k, _ = r.br.Read(dst)
	}
	if _, err := io.ReadFull(r.src, dst[k:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("read %s frame of %d bytes: %w", FrameName(typ), len(dst), truncated(err))
	}
	return nil
}

// fail records err as sticky and returns it now, or after the n packets
// already gathered.
func (r *Reader) fail(n int, err error) (int, error) {
	r.err = err
	if n > 0 {
		return n, nil
	}
	return 0, err
}
