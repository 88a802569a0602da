package server

// ICMP errors on the LAN -> device path (routineWriteStream calls
// verdictOut, which calls admitICMPError). An error is how path-MTU
// discovery and unreachable ports reach a device, so it is let in for the
// flow it quotes, never as a reply of its own: the quoted packet must be
// one the device sent (quoted source = the device's address) on a flow in
// its conntrack table (quoted destination, protocol and ports), and the
// error must look like one a router or host sends (RFC 792/1812: at most
// 576 bytes for IPv4; RFC 4443: at most 1280 for IPv6; the quoted IP header
// and 8 bytes of its transport header complete).

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/sallyport/sallyport/server/conntrack"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// Largest ICMP error accepted, whole packet: RFC 1812 4.3.2.3 (IPv4) and
// RFC 4443 2.4(c) (IPv6, the minimum MTU).
const (
	maxICMPErrorV4 = 576
	maxICMPErrorV6 = 1280
)

// quotedL4 is how much of the quoted transport header an error must carry:
// RFC 792 guarantees the first 8 bytes (ports, or ICMP type and echo id).
const quotedL4 = 8

// isICMPError reports whether info is an ICMP error message: destination
// unreachable, time exceeded or parameter problem (IPv4), or those and
// packet too big (IPv6).
func isICMPError(info *packet.Info) bool {
	switch {
	case info.Proto == packet.ProtoICMP && info.Version == 4:
		t := info.ICMPType
		return t == 3 || t == 11 || t == 12
	case info.Proto == packet.ProtoICMPv6 && info.Version == 6:
		t := info.ICMPType
		return t >= 1 && t <= 4
	}
	return false
}

// admitICMPError reports whether pkt, an ICMP error (isICMPError) from the
// network, may go to the device at addr whose flows are flows: it must be
// addressed to the device, be no larger than an error may be, and quote a
// packet the device sent on one of its live flows.
func admitICMPError(pkt []byte, info *packet.Info, addr netip.Addr, flows *conntrack.Table, now time.Time) bool {
	if info.Dst != addr {
		return false
	}
	quoted, ok := icmpErrorFlow(pkt, info)
	return ok && quoted.Src == addr && flows.Has(quoted, now)
}

// icmpErrorFlow returns the flow of the packet quoted inside an ICMP error.
// It refuses what no honest router sends: an oversize or fragmented error,
// a quote of the other IP version, a quote without its complete IP header
// and 8 bytes of transport header, a quote of a non-first fragment, and an
// error about anything but TCP, UDP or an ICMP echo. Every read is
// bounds-checked.
func icmpErrorFlow(pkt []byte, info *packet.Info) (conntrack.Flow, bool) {
	var f conntrack.Flow
	if !isICMPError(info) || info.Fragment {
		return f, false
	}
	var inner []byte
	if info.Version == 4 {
		ihl := int(pkt[0]&0x0f) * 4
		if len(pkt) > maxICMPErrorV4 || len(pkt) < ihl+8 {
			return f, false
		}
		inner = pkt[ihl+8:]
	} else {
		if len(pkt) > maxICMPErrorV6 || len(pkt) < 40+8 || pkt[6] != packet.ProtoICMPv6 { // no extension headers before ICMPv6
			return f, false
		}
		inner = pkt[48:]
	}
	var l4 []byte
	switch {
	case info.Version == 4 && len(inner) >= 20 && inner[0]>>4 == 4:
		ihl := int(inner[0]&0x0f) * 4
		if ihl < 20 || len(inner) < ihl+quotedL4 {
			return f, false
		}
		if binary.BigEndian.Uint16(inner[6:8])&0x1fff != 0 { // non-first fragment: no ports
			return f, false
		}
		f.Proto = inner[9]
		f.Src = netip.AddrFrom4([4]byte(inner[12:16]))
		f.Dst = netip.AddrFrom4([4]byte(inner[16:20]))
		l4 = inner[ihl:]
	case info.Version == 6 && len(inner) >= 40+quotedL4 && inner[0]>>4 == 6:
		f.Proto = inner[6] // an extension header here is refused below
		f.Src = netip.AddrFrom16([16]byte(inner[8:24]))
		f.Dst = netip.AddrFrom16([16]byte(inner[24:40]))
		l4 = inner[40:]
	default:
		return f, false
	}
	switch {
	case f.Proto == packet.ProtoTCP, f.Proto == packet.ProtoUDP:
		f.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		f.DstPort = binary.BigEndian.Uint16(l4[2:4])
	case f.Proto == packet.ProtoICMP && info.Version == 4 && (l4[0] == 8 || l4[0] == 0),
		f.Proto == packet.ProtoICMPv6 && info.Version == 6 && (l4[0] == 128 || l4[0] == 129):
		// An echo, keyed as conntrack.FlowOf keys it: type and identifier.
		f.ICMPType = l4[0]
		f.SrcPort = binary.BigEndian.Uint16(l4[4:6])
		f.DstPort = f.SrcPort
	default: // other protocols, and errors about errors
		return f, false
	}
	return f, true
}
