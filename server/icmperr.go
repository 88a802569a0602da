package server

import (
	"encoding/binary"
	"net/netip"

	"github.com/sallyport/sallyport/server/conntrack"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// icmpErrorFlow returns the flow of the packet quoted inside an ICMP error
// (destination unreachable, packet too big, time exceeded, parameter
// problem). Such errors are how path-MTU discovery and unreachable ports
// reach a device; they are let through when the quoted packet belongs to a
// flow the device opened. The quote is usually truncated, so only the
// addresses, protocol and ports are read, each bounds-checked.
func icmpErrorFlow(pkt []byte, info *packet.Info) (conntrack.Flow, bool) {
	var inner []byte
	switch {
	case info.Proto == packet.ProtoICMP && info.Version == 4:
		if t := info.ICMPType; t != 3 && t != 11 && t != 12 {
			return conntrack.Flow{}, false
		}
		ihl := int(pkt[0]&0x0f) * 4
		if len(pkt) < ihl+8 {
			return conntrack.Flow{}, false
		}
		inner = pkt[ihl+8:]
	case info.Proto == packet.ProtoICMPv6 && info.Version == 6:
		if t := info.ICMPType; t < 1 || t > 4 {
			return conntrack.Flow{}, false
		}
		if len(pkt) < 40+8 || pkt[6] != packet.ProtoICMPv6 { // no extension headers before ICMPv6
			return conntrack.Flow{}, false
		}
		inner = pkt[48:]
	default:
		return conntrack.Flow{}, false
	}
	var f conntrack.Flow
	var l4 []byte
	switch {
	case len(inner) >= 20 && inner[0]>>4 == 4:
		ihl := int(inner[0]&0x0f) * 4
		if ihl < 20 || len(inner) < ihl {
			return f, false
		}
		f.Proto = inner[9]
		f.Src = netip.AddrFrom4([4]byte(inner[12:16]))
		f.Dst = netip.AddrFrom4([4]byte(inner[16:20]))
		l4 = inner[ihl:]
	case len(inner) >= 40 && inner[0]>>4 == 6:
		f.Proto = inner[6]
		f.Src = netip.AddrFrom16([16]byte(inner[8:24]))
		f.Dst = netip.AddrFrom16([16]byte(inner[24:40]))
		l4 = inner[40:]
	default:
		return f, false
	}
	switch f.Proto {
	case packet.ProtoTCP, packet.ProtoUDP:
		if len(l4) < 4 {
			return f, false
		}
		f.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		f.DstPort = binary.BigEndian.Uint16(l4[2:4])
	case packet.ProtoICMP, packet.ProtoICMPv6:
		if len(l4) < 6 {
			return f, false
		}
		f.SrcPort = binary.BigEndian.Uint16(l4[4:6]) // echo identifier, as packet.Parse records it
		f.DstPort = f.SrcPort
	default:
		return f, false
	}
	return f, true
}
