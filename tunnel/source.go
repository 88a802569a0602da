/* Packet sources: the TUN read side of both egress loops.
 *
 * The gateway (LAN -> device, server/todevice.go) and the laptop (laptop ->
 * gateway, client/sendq.go) each run ONE loop that reads the TUN a packet at
 * a time and queues each packet in a tunnel.Lanes queue for a writer that
 * flushes once per round. PacketSource hides what differs between drivers:
 *
 *   - a TUN with offloads (VnetDevice, the wireguard driver on Linux) hands
 *     over one unsplit packet per read, a TCP super-packet of up to 64 KiB
 *     behind its virtio-net header (ReadVnet);
 *   - a plain Device (the water driver, wireguard without offloads) reads a
 *     batch; the adapter hands its packets out one by one behind an all-zero
 *     header, reading straight into the caller's buffer when the driver's
 *     batch is one packet (both real drivers), so it adds no copy there.
 *
 * So the rules after the read (which session, admission, lanes, segmenting
 * for a peer without gso) are written once per side.
 */

package tunnel

import (
	"errors"
	"fmt"
)

// PacketSource reads a TUN one packet at a time.
type PacketSource interface {
	// ReadPacket reads one packet into buf[offset:] and its virtio-net
	// header into buf[offset-VnetHdrLen:offset] (all zero for a plain
	// packet) and returns the packet's length. offset must be at least
	// VnetHdrLen and buf must have room for MaxPacket bytes after it. After
	// the device is closed it returns an error wrapping ErrDeviceClosed.
	ReadPacket(buf []byte, offset int) (int, error)
}

// NewPacketSource returns the source for dev: its own ReadVnet when it
// passes super-packets whole (AsVnet), else a batching adapter. A source
// is used by one goroutine.
func NewPacketSource(dev Device) PacketSource {
	if v, ok := AsVnet(dev); ok {
		return vnetSource{v}
	}
	s := &batchSource{dev: dev}
	if dev.BatchSize() > 1 {
		s.b = NewBatch(dev.BatchSize(), Headroom+MaxPacket)
	}
	return s
}

// vnetSource is a VnetDevice as a PacketSource.
type vnetSource struct{ dev VnetDevice }

func (s vnetSource) ReadPacket(buf []byte, offset int) (int, error) {
	return s.dev.ReadVnet(buf, offset)
}

// batchSource is a plain Device as a PacketSource.
type batchSource struct {
	dev   Device
	b     *Batch // nil: the driver reads one packet per call, straight into the caller's buffer
	next  int    // next packet of b to hand out
	bufs  [1][]byte
	sizes [1]int
}

// errEmptyReads ends a read that the driver keeps answering with no packet
// and no error, rather than spinning.
var errEmptyReads = errors.New("device returned no packet 16 times in a row")

func (s *batchSource) ReadPacket(buf []byte, offset int) (int, error) {
	if offset < VnetHdrLen || offset > len(buf) {
		return 0, fmt.Errorf("read %s: offset %d leaves no room for the virtio-net header", s.dev.Name(), offset)
	}
	clear(buf[offset-VnetHdrLen : offset]) // a plain packet: no GSO, checksum complete
	if s.b == nil {
		s.bufs[0] = buf
		n, err := s.readDirect(offset)
		s.bufs[0] = nil // hold no reference to the caller's buffer
		return n, err
	}
	for tries := 0; s.next >= s.b.N; tries++ {
		if tries == 16 {
			return 0, fmt.Errorf("read %s: %w", s.dev.Name(), errEmptyReads)
		}
		n, err := s.dev.Read(s.b.Bufs, s.b.Sizes, Headroom)
		if err != nil {
			return 0, err
		}
		s.b.N, s.next = n, 0
	}
	i := s.next
	s.next++
	size := s.b.Sizes[i]
	if offset+size > len(buf) {
		return 0, fmt.Errorf("read %s: %d-byte packet does not fit a %d-byte buffer", s.dev.Name(), size, len(buf)-offset)
	}
	return copy(buf[offset:], s.b.Bufs[i][Headroom:Headroom+size]), nil
}

// readDirect reads one packet into s.bufs[0][offset:].
func (s *batchSource) readDirect(offset int) (int, error) {
	for range 16 {
		n, err := s.dev.Read(s.bufs[:], s.sizes[:], offset)
		if err != nil {
			return 0, err
		}
		if n > 0 {
			return s.sizes[0], nil
		}
	}
	return 0, fmt.Errorf("read %s: %w", s.dev.Name(), errEmptyReads)
}
