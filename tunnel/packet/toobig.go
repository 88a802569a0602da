package packet

// ICMP "packet too big" errors a relay sends back to a sender whose packet
// does not fit the next hop: IPv4 Destination Unreachable / Fragmentation
// Needed with the next-hop MTU (RFC 792, RFC 1191) and ICMPv6 Packet Too
// Big (RFC 4443 3.2). The datagram path (CONNECT-IP over QUIC) carries
// packets of at most the QUIC datagram size; a larger one is answered with
// this error so the sender's path-MTU discovery shrinks it, as a router
// would.

import (
	"encoding/binary"
	"net/netip"
)

// Largest ICMP errors (RFC 1812 4.3.2.3, RFC 4443 2.4(c)): as much of the
// offending packet is quoted as fits.
const (
	maxErrorV4 = 576
	maxErrorV6 = 1280
)

// AppendTooBig appends to dst the ICMP error telling the sender of pkt that
// the next hop takes packets of at most mtu bytes, sent from from (an
// address of the relay, of pkt's family), and returns it. ok is false when
// no error may be sent (RFC 1122 3.2.2, RFC 4443 2.4(e)): pkt does not
// parse, is an ICMP error itself, a non-first fragment, an IPv4 packet
// without Don't Fragment (a router would fragment it), or comes from an
// address an error must not go to (unspecified, multicast, loopback);
// or from is not of pkt's family. mtu is clamped to the family's minimum
// (68 for IPv4, 1280 for IPv6).
func AppendTooBig(dst, pkt []byte, mtu int, from netip.Addr) (out []byte, ok bool) {
	var info Info
	if Parse(pkt, &info) != nil || info.NonFirstFragment() || isError(&info) {
		return dst, false
	}
	src := info.Src
	if src.IsUnspecified() || src.IsMulticast() || src.IsLoopback() || !from.IsValid() || from.Is4() != src.Is4() {
		return dst, false
	}
	if info.Version == 4 {
		if binary.BigEndian.Uint16(pkt[6:8])&0x4000 == 0 { // DF clear
			return dst, false
		}
		if src == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return dst, false
		}
		return appendV4(dst, pkt, uint16(max(mtu, 68)), from, src), true
	}
	return appendV6(dst, pkt, uint32(max(mtu, 1280)), from, src), true
}

func isError(info *Info) bool {
	switch {
	case info.Version == 4 && info.Proto == ProtoICMP:
		t := info.ICMPType
		return t == 3 || t == 4 || t == 5 || t == 11 || t == 12
	case info.Version == 6 && info.Proto == ProtoICMPv6:
		return info.ICMPType < 128
	}
	return false
}

func appendV4(dst, pkt []byte, mtu uint16, from, to netip.Addr) []byte {
	quote := pkt[:min(len(pkt), maxErrorV4-20-8)]
	total := 20 + 8 + len(quote)
	start := len(dst)
	dst = append(dst, make([]byte, total)...)
	b := dst[start:]
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(total))
	b[8] = 64 // TTL
	b[9] = ProtoICMP
	f4, t4 := from.As4(), to.As4()
	copy(b[12:16], f4[:])
	copy(b[16:20], t4[:])
	binary.BigEndian.PutUint16(b[10:12], checksum(0, b[:20]))
	icmp := b[20:]
	icmp[0], icmp[1] = 3, 4 // destination unreachable, fragmentation needed
	binary.BigEndian.PutUint16(icmp[6:8], mtu)
	copy(icmp[8:], quote)
	binary.BigEndian.PutUint16(icmp[2:4], checksum(0, icmp))
	return dst
}

func appendV6(dst, pkt []byte, mtu uint32, from, to netip.Addr) []byte {
	quote := pkt[:min(len(pkt), maxErrorV6-40-8)]
	plen := 8 + len(quote)
	start := len(dst)
	dst = append(dst, make([]byte, 40+plen)...)
	b := dst[start:]
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:6], uint16(plen))
	b[6] = ProtoICMPv6
	b[7] = 64 // hop limit
	f16, t16 := from.As16(), to.As16()
	copy(b[8:24], f16[:])
	copy(b[24:40], t16[:])
	icmp := b[40:]
	icmp[0] = 2 // packet too big
	binary.BigEndian.PutUint32(icmp[4:8], mtu)
	copy(icmp[8:], quote)
	// Pseudo-header: source, destination, upper-layer length, next header.
	var ph [40]byte
	copy(ph[0:16], f16[:])
	copy(ph[16:32], t16[:])
	binary.BigEndian.PutUint32(ph[32:36], uint32(plen))
	ph[39] = ProtoICMPv6
	binary.BigEndian.PutUint16(icmp[2:4], checksum(sum(0, ph[:]), icmp))
	return dst
}

// sum adds b to a one's-complement running sum.
func sum(acc uint32, b []byte) uint32 {
	for len(b) >= 2 {
		acc += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	return acc
}

// checksum is the Internet checksum of b on top of the running sum acc.
func checksum(acc uint32, b []byte) uint16 {
	acc = sum(acc, b)
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return ^uint16(acc)
}
