package tunnel

// GSO pass-through.
//
// A Linux TUN opened with IFF_VNET_HDR and TCP/UDP offloads hands the reader
// TCP "super-packets" of up to 64 KiB, each behind a 10-byte virtio-net
// header that says how to cut it into MSS-sized segments, and packets whose
// transport checksum is only partial (the kernel fills it in later). When
// both ends negotiated CapGSO, such a packet travels as one FrameDataGSO
// (header + packet) and the receiver writes it to its own TUN whole: the
// segmentation and checksums happen once, in the kernel, at the far end,
// instead of per segment in Go on both sides. Segment and CompleteChecksum
// do the same work in Go for a peer or device that cannot take the packet
// whole. A header that arrives from the network reaches the kernel only
// after ValidateVnet.

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// VnetHdrLen is the size of the virtio-net header (struct virtio_net_hdr).
const VnetHdrLen = 10

// FrameDataGSO carries one packet behind its virtio-net header; only sent
// when both ends negotiated CapGSO.
const FrameDataGSO byte = 0x02

// CapGSO is the hello/config capability for FrameDataGSO.
const CapGSO = "gso"

// Virtio-net header flags and GSO types (linux/virtio_net.h).
const (
	VnetFlagNeedsCsum = 1
	VnetFlagDataValid = 2
	VnetGSONone       = 0
	VnetGSOTCPv4      = 1
	VnetGSOTCPv6      = 4
	VnetGSOUDPL4      = 5
	VnetGSOECN        = 0x80
)

// VnetHdr is a decoded virtio-net header. On the wire and on the TUN it is
// little-endian.
type VnetHdr struct {
	Flags      uint8
	GSOType    uint8
	HdrLen     uint16
	GSOSize    uint16
	CsumStart  uint16
	CsumOffset uint16
}

// DecodeVnetHdr reads a header from the first VnetHdrLen bytes of b.
func DecodeVnetHdr(b []byte) VnetHdr {
	_ = b[VnetHdrLen-1]
	return VnetHdr{
		Flags: b[0], GSOType: b[1],
		HdrLen:     binary.LittleEndian.Uint16(b[2:]),
		GSOSize:    binary.LittleEndian.Uint16(b[4:]),
		CsumStart:  binary.LittleEndian.Uint16(b[6:]),
		CsumOffset: binary.LittleEndian.Uint16(b[8:]),
	}
}

// Encode writes h into the first VnetHdrLen bytes of b.
func (h VnetHdr) Encode(b []byte) {
	_ = b[VnetHdrLen-1]
	b[0], b[1] = h.Flags, h.GSOType
	binary.LittleEndian.PutUint16(b[2:], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], h.CsumOffset)
}

// IsZero reports a plain packet: complete checksum, no segmentation.
func (h VnetHdr) IsZero() bool { return h == VnetHdr{} }

var errVnet = errors.New("bad virtio-net header")

// transport returns the IP header length and transport protocol of pkt
// (IPv6 extension headers are not accepted with offloads).
func transport(pkt []byte) (ipLen int, proto byte, err error) {
	if len(pkt) < 20 {
		return 0, 0, fmt.Errorf("%w: %d-byte packet", errVnet, len(pkt))
	}
	switch pkt[0] >> 4 {
	case 4:
		ipLen = int(pkt[0]&0x0f) * 4
		if ipLen < 20 || len(pkt) < ipLen {
			return 0, 0, fmt.Errorf("%w: IPv4 header length %d", errVnet, ipLen)
		}
		if int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
			return 0, 0, fmt.Errorf("%w: IPv4 total length %d for %d bytes", errVnet, binary.BigEndian.Uint16(pkt[2:]), len(pkt))
		}
		return ipLen, pkt[9], nil
	case 6:
		if len(pkt) < 40 || int(binary.BigEndian.Uint16(pkt[4:]))+40 != len(pkt) {
			return 0, 0, fmt.Errorf("%w: IPv6 payload length does not match %d bytes", errVnet, len(pkt))
		}
		return 40, pkt[6], nil
	}
	return 0, 0, fmt.Errorf("%w: IP version %d", errVnet, pkt[0]>>4)
}

// l4HeaderLen is the transport header length at pkt[ipLen:].
func l4HeaderLen(pkt []byte, ipLen int, proto byte) (int, error) {
	switch proto {
	case 6:
		if len(pkt) < ipLen+20 {
			return 0, fmt.Errorf("%w: truncated TCP header", errVnet)
		}
		n := int(pkt[ipLen+12]>>4) * 4
		if n < 20 || len(pkt) < ipLen+n {
			return 0, fmt.Errorf("%w: TCP header length %d", errVnet, n)
		}
		return n, nil
	case 17:
		if len(pkt) < ipLen+8 {
			return 0, fmt.Errorf("%w: truncated UDP header", errVnet)
		}
		return 8, nil
	}
	return 0, fmt.Errorf("%w: protocol %d cannot be offloaded", errVnet, proto)
}

// ValidateVnet checks a header from the network against the packet it came
// with, so only well-formed offload requests reach the kernel: an IP
// packet whose length fields match its length, a known GSO type matching
// its IP version and protocol, checksum fields that point at that
// protocol's checksum inside a complete transport header, a segment size
// from 1 to mtu, no more than 64 segments, and a header length within the
// packet. An all-zero header (a plain packet) passes unchecked.
func ValidateVnet(h VnetHdr, pkt []byte, mtu int) error {
	if h.Flags&^(VnetFlagNeedsCsum|VnetFlagDataValid) != 0 {
		return fmt.Errorf("%w: flags %#x", errVnet, h.Flags)
	}
	if h.IsZero() {
		return nil
	}
	ipLen, proto, err := transport(pkt)
	if err != nil {
		return err
	}
	l4 := 0 // the transport header's length, known when a checksum is asked for
	if h.Flags&VnetFlagNeedsCsum != 0 {
		want := uint16(16)
		if proto == 17 {
			want = 6
		} else if proto != 6 {
			return fmt.Errorf("%w: checksum offload for protocol %d", errVnet, proto)
		}
		if int(h.CsumStart) != ipLen || h.CsumOffset != want {
			return fmt.Errorf("%w: checksum at %d+%d, want %d+%d", errVnet, h.CsumStart, h.CsumOffset, ipLen, want)
		}
		// The checksum field must be in the packet: the kernel refuses
		// the write otherwise (EINVAL), and the packet would be lost as a
		// write error instead of counted as malformed.
		if l4, err = l4HeaderLen(pkt, ipLen, proto); err != nil {
			return err
		}
	}
	gso := h.GSOType &^ VnetGSOECN
	if gso == VnetGSONone {
		if h.GSOType != 0 || h.GSOSize != 0 {
			return fmt.Errorf("%w: ECN or segment size without GSO", errVnet)
		}
		return nil
	}
	v := pkt[0] >> 4
	switch {
	case gso == VnetGSOTCPv4 && v == 4 && proto == 6, gso == VnetGSOTCPv6 && v == 6 && proto == 6, gso == VnetGSOUDPL4 && proto == 17:
	default:
		return fmt.Errorf("%w: GSO type %d for IPv%d protocol %d", errVnet, h.GSOType, v, proto)
	}
	if h.Flags&VnetFlagNeedsCsum == 0 {
		return fmt.Errorf("%w: GSO without checksum offload", errVnet)
	}
	payload := len(pkt) - ipLen - l4
	if h.GSOSize == 0 || int(h.GSOSize)+ipLen+l4 > mtu || payload > 64*int(h.GSOSize) {
		return fmt.Errorf("%w: segment size %d for %d-byte payload at MTU %d", errVnet, h.GSOSize, payload, mtu)
	}
	if int(h.HdrLen) > len(pkt) {
		return fmt.Errorf("%w: header length %d beyond %d-byte packet", errVnet, h.HdrLen, len(pkt))
	}
	return nil
}

// sum adds b to a running ones-complement sum.
func sum(acc uint64, b []byte) uint64 {
	for len(b) >= 8 {
		v := binary.BigEndian.Uint64(b)
		acc += v >> 32
		acc += v & 0xffffffff
		b = b[8:]
	}
	for len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	return acc
}

func fold(acc uint64) uint16 {
	for acc > 0xffff {
		acc = (acc >> 16) + (acc & 0xffff)
	}
	return uint16(acc)
}

// pseudo is the pseudo-header sum for a transport segment of l4len bytes.
func pseudo(pkt []byte, proto byte, l4len int) uint64 {
	var acc uint64
	if pkt[0]>>4 == 4 {
		acc = sum(0, pkt[12:20])
	} else {
		acc = sum(0, pkt[8:40])
	}
	return acc + uint64(proto) + uint64(l4len)
}

// l4Checksum computes and stores the transport checksum of a complete
// packet whose IP header is ipLen bytes.
func l4Checksum(pkt []byte, ipLen int, proto byte) {
	at := ipLen + 16
	if proto == 17 {
		at = ipLen + 6
	}
	pkt[at], pkt[at+1] = 0, 0
	c := ^fold(sum(pseudo(pkt, proto, len(pkt)-ipLen), pkt[ipLen:]))
	if proto == 17 && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(pkt[at:], c)
}

func ipv4Checksum(pkt []byte, ipLen int) {
	pkt[10], pkt[11] = 0, 0
	binary.BigEndian.PutUint16(pkt[10:], ^fold(sum(0, pkt[:ipLen])))
}

// CompleteChecksum finishes a packet that carries a partial transport
// checksum (VnetFlagNeedsCsum without GSO), in place, for a peer or device
// that needs complete checksums.
func CompleteChecksum(h VnetHdr, pkt []byte) error {
	if h.Flags&VnetFlagNeedsCsum == 0 {
		return nil
	}
	start, at := int(h.CsumStart), int(h.CsumStart)+int(h.CsumOffset)
	if start > len(pkt) || at+2 > len(pkt) {
		return fmt.Errorf("%w: checksum at %d+%d beyond %d-byte packet", errVnet, h.CsumStart, h.CsumOffset, len(pkt))
	}
	// The field holds the pseudo-header sum; summing over it completes it.
	c := ^fold(sum(0, pkt[start:]))
	binary.BigEndian.PutUint16(pkt[at:], c)
	return nil
}

// Segment cuts a GSO packet into segments of h.GSOSize payload bytes with
// complete IP and transport checksums, written to bufs[i][offset:] with
// their lengths in sizes[i]. It returns the number of segments. pkt is not
// modified. Non-GSO packets are copied as one segment with their checksum
// completed.
func Segment(h VnetHdr, pkt []byte, bufs [][]byte, sizes []int, offset int) (int, error) {
	if h.GSOType&^VnetGSOECN == VnetGSONone {
		if len(bufs) == 0 || len(bufs[0]) < offset+len(pkt) {
			return 0, fmt.Errorf("segment: no room for a %d-byte packet", len(pkt))
		}
		sizes[0] = copy(bufs[0][offset:], pkt)
		return 1, CompleteChecksum(h, bufs[0][offset:offset+sizes[0]])
	}
	ipLen, proto, err := transport(pkt)
	if err != nil {
		return 0, err
	}
	l4, err := l4HeaderLen(pkt, ipLen, proto)
	if err != nil {
		return 0, err
	}
	hdrLen := ipLen + l4
	mss := int(h.GSOSize)
	if mss == 0 {
		return 0, fmt.Errorf("%w: zero segment size", errVnet)
	}
	payload := pkt[hdrLen:]
	n := (len(payload) + mss - 1) / mss
	if n > len(bufs) {
		return 0, fmt.Errorf("segment: %d segments do not fit a batch of %d", n, len(bufs))
	}
	v4 := pkt[0]>>4 == 4
	var id uint16
	var seq uint32
	if v4 {
		id = binary.BigEndian.Uint16(pkt[4:])
	}
	if proto == 6 {
		seq = binary.BigEndian.Uint32(pkt[ipLen+4:])
	}
	for i := 0; i < n; i++ {
		chunk := payload[i*mss : min((i+1)*mss, len(payload))]
		total := hdrLen + len(chunk)
		if len(bufs[i]) < offset+total {
			return 0, fmt.Errorf("segment: %d-byte segment does not fit its buffer", total)
		}
		seg := bufs[i][offset : offset+total]
		copy(seg, pkt[:hdrLen])
		copy(seg[hdrLen:], chunk)
		if v4 {
			binary.BigEndian.PutUint16(seg[2:], uint16(total))
			binary.BigEndian.PutUint16(seg[4:], id+uint16(i))
			ipv4Checksum(seg, ipLen)
		} else {
			binary.BigEndian.PutUint16(seg[4:], uint16(total-40))
		}
		switch proto {
		case 6:
			binary.BigEndian.PutUint32(seg[ipLen+4:], seq+uint32(i*mss))
			const fin, psh, cwr = 0x01, 0x08, 0x80
			if i < n-1 {
				seg[ipLen+13] &^= fin | psh
			}
			if i > 0 {
				seg[ipLen+13] &^= cwr
			}
		case 17:
			binary.BigEndian.PutUint16(seg[ipLen+4:], uint16(total-ipLen))
		}
		l4Checksum(seg, ipLen, proto)
		sizes[i] = total
	}
	return n, nil
}
