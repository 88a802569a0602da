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
 *
 * Memory follows traffic: the bufio.Reader comes from a shared pool
 * (pool.go) when bytes arrive and goes back once everything buffered has
 * been decoded. A quiet stream is waited on with a small read into the
 * Reader's own few bytes, and Wait lets the relay take its batch buffers
 * only after that read returned, so an idle session holds no big buffer.
 */

package tunnel

import (
	"bufio"
	"fmt"
	"io"
	"sync"
)

// Reader decodes frames from a stream in place. It is for one goroutine.
// After the first error every later call returns the same error.
//
// Its stream buffer comes from a shared pool when bytes arrive and goes
// back as soon as everything buffered has been decoded: while the stream
// is quiet, the Reader waits in a small read into its own few bytes and
// holds no big buffer.
type Reader struct {
	src       io.Reader
	pool      *sync.Pool    // *bufio.Reader of the Reader's buffer size
	br        *bufio.Reader // from pool while bytes are buffered, else nil
	feed      feeder        // what br reads: the first small read, then src
	pending   int           // bytes of the last returned frame still to discard
	err       error
	srcErr    error // a read error met before br was taken
	directMin int   // data frames from this size are read past br (tests lower it)
}

// feeder is the source of a Reader's bufio.Reader: first the bytes of the
// small read the Reader woke up with, then the stream itself.
type feeder struct {
	src   io.Reader
	pre   []byte // unread part of small
	small [smallRead]byte
}

// smallRead is the size of the read an idle Reader waits in.
const smallRead = 64

func (f *feeder) Read(p []byte) (int, error) {
	if len(f.pre) > 0 {
		n := copy(p, f.pre)
		f.pre = f.pre[n:]
		return n, nil
	}
	return f.src.Read(p)
}

// NewReader returns a Reader over r with a buffer of bufSize bytes (raised
// to MinReadBuffer when smaller, so a maximal frame fits).
func NewReader(r io.Reader, bufSize int) *Reader {
	if bufSize < MinReadBuffer {
		bufSize = MinReadBuffer
	}
	rd := &Reader{src: r, pool: readBufs.get(bufSize), directMin: directFrame}
	rd.feed.src = r
	return rd
}

// acquire makes sure the Reader holds its stream buffer with at least one
// byte in it: an idle Reader first blocks in a small read of its own, and
// takes a buffer from the pool only once that returned bytes.
func (r *Reader) acquire() error {
	if r.br != nil {
		return nil
	}
	if r.srcErr != nil {
		return r.srcErr
	}
	var n int
	var err error
	for range 100 { // like bufio: give up on a source that keeps returning nothing
		n, err = r.src.Read(r.feed.small[:])
		if n > 0 || err != nil {
			break
		}
	}
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		r.srcErr = err
		return err
	}
	// Bytes and an error at once: the bytes first, the error on the next
	// read of the stream (which is what a later read would return anyway).
	r.feed.pre = r.feed.small[:n]
	r.br = r.pool.Get().(*bufio.Reader)
	r.br.Reset(&r.feed)
	return nil
}

// release discards the frame last returned and gives the stream buffer
// back once nothing is left in it.
func (r *Reader) release() {
	if r.br == nil {
		return
	}
	if r.pending > 0 {
		// The bytes were peeked, so Discard cannot fail.
		r.br.Discard(r.pending)
		r.pending = 0
	}
	if r.br.Buffered() == 0 && len(r.feed.pre) == 0 {
		r.br.Reset(nil)
		r.pool.Put(r.br)
		r.br = nil
	}
}

// Wait blocks until the stream has bytes for the next call or has failed
// (the next call then reports it), so a relay can take its batch buffers
// only once traffic arrives.
func (r *Reader) Wait() {
	if r.err == nil {
		r.release()
		_ = r.acquire()
	}
}

// drop gives the stream buffer back after a sticky error: nothing will be
// read from it again.
func (r *Reader) drop() {
	if r.br != nil {
		r.br.Reset(nil)
		r.pool.Put(r.br)
		r.br = nil
	}
	r.feed.pre, r.pending = nil, 0
}

// holding reports whether the Reader holds a stream buffer now (for tests
// and memory accounting).
func (r *Reader) holding() bool { return r.br != nil }

// Buffered returns the number of bytes already read from the stream and not
// yet returned as frames (excluding the frame last returned by Next).
func (r *Reader) Buffered() int {
	if r.br == nil {
		return 0
	}
	return r.br.Buffered() + len(r.feed.pre) - r.pending
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
		r.drop()
	}
	return typ, payload, err
}

func (r *Reader) next() (byte, []byte, error) {
	if err := r.acquire(); err != nil {
		if err == io.EOF {
			return 0, nil, io.EOF
		}
		return 0, nil, fmt.Errorf("read frame header: %w", truncated(err))
	}
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
			if r.Buffered() == 0 {
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
	if r.acquire() != nil {
		return 0, 0, false, nil // Next reports it with the usual wording
	}
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
	if _, err := io.ReadFull(&r.feed, dst[k:]); err != nil {
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
	r.drop()
	if n > 0 {
		return n, nil
	}
	return 0, err
}
