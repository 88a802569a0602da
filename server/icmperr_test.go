package server

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/sallyport/sallyport/server/conntrack"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// ipv4 builds an IPv4 header + payload with a correct total length.
func ipv4(proto byte, src, dst string, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[8] = 64
	b[9] = proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	copy(b[20:], payload)
	return b
}

func TestICMPErrorFlow(t *testing.T) {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 443)
	tcp[12] = 5 << 4
	orig := ipv4(packet.ProtoTCP, "10.8.0.2", "192.168.77.10", tcp)
	quote := orig[:28] // routers quote the IP header and 8 bytes
	icmp := func(typ byte, q []byte) []byte {
		return ipv4(packet.ProtoICMP, "192.168.77.1", "10.8.0.2", append([]byte{typ, 4, 0, 0, 0, 0, 0x05, 0xdc}, q...))
	}
	want := conntrack.Flow{Proto: packet.ProtoTCP, Src: netip.MustParseAddr("10.8.0.2"), Dst: netip.MustParseAddr("192.168.77.10"), SrcPort: 40000, DstPort: 443}
	tests := []struct {
		name string
		pkt  []byte
		ok   bool
	}{
		{"frag needed quoting a TCP flow", icmp(3, quote), true},
		{"time exceeded", icmp(11, quote), true},
		{"echo reply is not an error", icmp(0, quote), false},
		{"quote too short for ports", icmp(3, quote[:22]), false},
		{"no quote", icmp(3, nil), false},
		{"quote with bad IHL", icmp(3, append([]byte{0x41}, quote[1:]...)), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var info packet.Info
			if err := packet.Parse(tt.pkt, &info); err != nil {
				t.Fatalf("parse outer: %v", err)
			}
			f, ok := icmpErrorFlow(tt.pkt, &info)
			if ok != tt.ok || (ok && f != want) {
				t.Fatalf("got %+v %v, want %+v %v", f, ok, want, tt.ok)
			}
		})
	}
}

func FuzzICMPErrorFlow(f *testing.F) {
	f.Add(ipv4(packet.ProtoICMP, "1.1.1.1", "10.8.0.2", []byte{3, 4, 0, 0, 0, 0, 5, 220, 0x45, 0, 0, 40}))
	f.Add([]byte{0x60, 0, 0, 0, 0, 8, 58, 64})
	f.Add(icmpErr(false, 3, "192.168.77.1", "10.8.0.2", ipv4(packet.ProtoTCP, "10.8.0.2", "192.168.77.10", l4(packet.ProtoTCP, 1, 2, 0, 0))[:28], 0))
	f.Add(icmpErr(true, 2, "fd00:77::1", "fd00:8::2", ipv6(packet.ProtoUDP, "fd00:8::2", "fd00:77::10", l4(packet.ProtoUDP, 1, 2, 0, 0)), 0))
	f.Add(icmpErr(true, 3, "fd00:77::1", "fd00:8::2", ipv6(packet.ProtoICMPv6, "fd00:8::2", "fd00:77::10", l4(packet.ProtoICMPv6, 0, 0, 128, 7))[:48], 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		var info packet.Info
		if packet.Parse(b, &info) != nil {
			return
		}
		fl, ok := icmpErrorFlow(b, &info)
		if !ok {
			return
		}
		// What it accepts is an error within the size bounds, quoting its own IP version.
		if !isICMPError(&info) || len(b) > maxICMPErrorV6 || (info.Version == 4 && len(b) > maxICMPErrorV4) {
			t.Fatalf("accepted %d-byte packet %+v", len(b), info)
		}
		if fl.Src.Is4() != (info.Version == 4) {
			t.Fatalf("v%d error quoting %s", info.Version, fl.Src)
		}
	})
}
