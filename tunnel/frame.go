/* Frame codec: the sallyport wire protocol inside one TLS stream.
 *
 * A session is one TLS 1.3 connection (ALPN "sallyport/1") carrying a stream
 * of frames, each a 4-byte header [type:1][length:3, big-endian] and a
 * payload of length bytes:
 *
 *   Data      0x01  one IP packet (never empty)
 *   Hello     0x10  client -> server, JSON Hello (first frame of a session)
 *   Config    0x11  server -> client, JSON Config (answer to Hello)
 *   Keepalive 0x12  empty
 *   Close     0x13  JSON CloseMsg, sent before an orderly shutdown
 *
 * Any other type is a protocol error, as is a length above MaxPayload; the
 * length is checked before anything is read or allocated for it.
 *
 * Sending (TUN -> TLS): a relay goroutine reads a batch of packets from the
 * Device into pooled buffers that keep Headroom bytes free in front of each
 * packet, then hands the whole batch to Writer.WriteBatch, which frames every
 * small packet into one bufio.Writer and flushes once, so TLS sees one large
 * write (few, full records) per batch instead of one record per packet. A
 * frame of directFrame bytes or more (a GSO super-packet) already fills
 * records on its own: it gets its header in the headroom and goes to TLS
 * straight from its buffer, without the copy into the bufio.Writer. Control
 * frames (keepalive, close) take the same mutex and flush at once.
 *
 * Receiving (TLS -> TUN): a relay goroutine calls Reader.ReadBatch, which
 * decodes frames in place out of one large bufio.Reader (Peek/Discard, no
 * per-frame allocation), copies data payloads into the caller's batch buffers
 * at the device offset, passes control frames to a callback, and keeps
 * gathering while more frames are already buffered (and the batch has room).
 * A large data frame not yet buffered whole is read from TLS straight into
 * the batch buffer instead, so a super-packet is copied once, not twice.
 * The caller then makes one Device.Write of the whole batch, which is what
 * lets the Linux TUN driver coalesce TCP segments (GRO) on the way in.
 *
 * Neither direction allocates or sends on a channel per packet.
 */

// Package tunnel is the sallyport data plane shared by the gateway and the
// client: the framed wire protocol inside TLS, the control messages, batched
// TUN devices and the netlink helpers that configure them.
package tunnel

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"sync"
)

// ALPN is the TLS application protocol both ends must negotiate.
const ALPN = "sallyport/1"

// ProtocolVersion is the version this implementation speaks in Hello/Config.
const ProtocolVersion = 1

// HeaderLen is the size of a frame header: type (1 byte) + length (3 bytes).
const HeaderLen = 4

// Headroom is the offset at which packets sit in device buffers. It leaves
// room for a frame header (HeaderLen) and for the 10-byte virtio-net header
// the Linux TUN driver writes in front of packets when offloads are on.
const Headroom = 16

// MaxPacket is the largest IP packet a data frame carries.
const MaxPacket = 65535

// GSOHeaderRoom is reserved in MaxPayload for the virtio-net (GSO)
// header carried in front of a super-packet.
const GSOHeaderRoom = 16

// MaxPayload bounds the length field of every frame. A larger length is a
// protocol error detected before the payload is read.
const MaxPayload = MaxPacket + GSOHeaderRoom

// MinReadBuffer is the smallest buffer a Reader uses: one whole maximal frame
// must fit so that it can be decoded in place.
const MinReadBuffer = HeaderLen + MaxPayload

// DefaultBufferSize is a good bufSize for NewReader and NewWriter: large
// enough for a full batch of MTU-sized packets in one TLS write.
const DefaultBufferSize = 256 << 10

// Frame types.
const (
	FrameData      byte = 0x01
	FrameHello     byte = 0x10
	FrameConfig    byte = 0x11
	FrameKeepalive byte = 0x12
	FrameClose     byte = 0x13
)

// ErrProtocol is wrapped by every error caused by bytes the peer sent that
// violate the wire protocol (unknown type, bad length, truncated frame, bad
// control message).
var ErrProtocol = errors.New("sallyport protocol error")

// FrameName returns a short name for a frame type, for logs.
func FrameName(typ byte) string {
	switch typ {
	case FrameData:
		return "data"
	case FrameDataGSO:
		return "data-gso"
	case FrameHello:
		return "hello"
	case FrameConfig:
		return "config"
	case FrameKeepalive:
		return "keepalive"
	case FrameClose:
		return "close"
	}
	return fmt.Sprintf("unknown(0x%02x)", typ)
}

// checkFrame validates a frame type and payload length against the protocol.
func checkFrame(typ byte, n int) error {
	if n < 0 || n > MaxPayload {
		return fmt.Errorf("%w: %s frame length %d exceeds maximum %d", ErrProtocol, FrameName(typ), n, MaxPayload)
	}
	switch typ {
	case FrameData:
		if n == 0 {
			return fmt.Errorf("%w: empty data frame", ErrProtocol)
		}
	case FrameDataGSO:
		if n <= VnetHdrLen || n-VnetHdrLen > MaxPacket {
			return fmt.Errorf("%w: data-gso frame of %d bytes", ErrProtocol, n)
		}
	case FrameKeepalive:
		if n != 0 {
			return fmt.Errorf("%w: keepalive frame with %d-byte payload", ErrProtocol, n)
		}
	case FrameHello, FrameConfig, FrameClose:
	default:
		return fmt.Errorf("%w: unknown frame type 0x%02x", ErrProtocol, typ)
	}
	return nil
}

// parseHeader is putHeader's inverse: the type and payload length of the
// frame header at h.
func parseHeader(h []byte) (typ byte, n int) {
	_ = h[3]
	return h[0], int(h[1])<<16 | int(h[2])<<8 | int(h[3])
}

func putHeader(h []byte, typ byte, n int) {
	_ = h[3]
	h[0] = typ
	h[1] = byte(n >> 16)
	h[2] = byte(n >> 8)
	h[3] = byte(n)
}

// AppendFrame appends one encoded frame to dst. It is meant for tests and
// tools; the relay uses Writer.
func AppendFrame(dst []byte, typ byte, payload []byte) ([]byte, error) {
	if err := checkFrame(typ, len(payload)); err != nil {
		return dst, err
	}
	var h [HeaderLen]byte
	putHeader(h[:], typ, len(payload))
	dst = append(dst, h[:]...)
	return append(dst, payload...), nil
}

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

// directFrame is the frame size from which WritePackets writes a frame
// straight from the caller's buffer instead of copying it into its own:
// one TLS record, so the flush this forces costs at most one short record.
const directFrame = 16 << 10
