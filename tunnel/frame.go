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
 *   Push      0x14  server -> client, JSON Config replacing the one in force
 *                   (only after both ends negotiated the "push" capability;
 *                   push.go)
 *   Renew     0x15  client -> server, JSON RenewRequest (only after both ends
 *                   negotiated the "renew" capability; message.go)
 *   Renewed   0x16  server -> client, JSON RenewReply, the answer to a Renew
 *
 * Any other type is a protocol error, as is a length above MaxPayload; the
 * length is checked before anything is read or allocated for it.
 *
 * This file holds the format (constants, header encoding, checkFrame);
 * writer.go encodes frames (TUN -> TLS) and reader.go decodes them
 * (TLS -> TUN). Neither direction allocates or sends on a channel per
 * packet.
 */

// Package tunnel is the sallyport data plane shared by the gateway and the
// client: the framed wire protocol inside TLS, the control messages, batched
// TUN devices and the netlink helpers that configure them.
package tunnel

import (
	"errors"
	"fmt"
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
	case FramePush:
		return "push"
	case FrameRenew:
		return "renew"
	case FrameRenewed:
		return "renewed"
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
	case FrameRenew, FrameRenewed:
		if n == 0 {
			return fmt.Errorf("%w: empty %s frame", ErrProtocol, FrameName(typ))
		}
	case FrameHello, FrameConfig, FrameClose, FramePush:
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

// directFrame is the frame size from which WritePackets writes a frame
// straight from the caller's buffer instead of copying it into its own:
// one TLS record, so the flush this forces costs at most one short record.
const directFrame = 16 << 10
