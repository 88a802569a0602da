package server

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/sallyport/sallyport/server/conntrack"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// ipv6 builds an IPv6 header + payload with a correct payload length.
func ipv6(proto byte, src, dst string, payload []byte) []byte {
	b := make([]byte, 40+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6] = proto
	b[7] = 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	copy(b[40:], payload)
	return b
}

// l4 builds a transport header (plus 4 payload bytes) for proto: TCP or UDP
// ports, or for ICMP/ICMPv6 a message of type typ with id as identifier.
func l4(proto byte, sport, dport uint16, typ byte, id uint16) []byte {
	switch proto {
	case packet.ProtoTCP:
		b := make([]byte, 24)
		binary.BigEndian.PutUint16(b[0:], sport)
		binary.BigEndian.PutUint16(b[2:], dport)
		b[12] = 5 << 4
		return b
	case packet.ProtoUDP:
		b := make([]byte, 12)
		binary.BigEndian.PutUint16(b[0:], sport)
		binary.BigEndian.PutUint16(b[2:], dport)
		binary.BigEndian.PutUint16(b[4:], 12)
		return b
	}
	b := make([]byte, 12)
	b[0] = typ
	binary.BigEndian.PutUint16(b[4:], id)
	return b
}

// icmpErr builds an ICMP (v4) or ICMPv6 (v6) error of type typ from src to
// dst quoting q, padded with pad zero bytes.
func icmpErr(v6 bool, typ byte, src, dst string, q []byte, pad int) []byte {
	body := append(append([]byte{typ, 0, 0, 0, 0, 0, 0x05, 0xdc}, q...), make([]byte, pad)...)
	if v6 {
		return ipv6(packet.ProtoICMPv6, src, dst, body)
	}
	return ipv4(packet.ProtoICMP, src, dst, body)
}

// admitFixture is a gateway with two registered devices (me and other)
// whose conntrack tables hold the flows their outgoing packets opened.
type admitFixture struct {
	srv       *Server
	me, other *session
}

func newAdmitFixture(t *testing.T, me, other string, meOut, otherOut [][]byte) *admitFixture {
	t.Helper()
	f := &admitFixture{srv: &Server{}}
	mk := func(addr string, out [][]byte) *session {
		ss := &session{srv: f.srv, addr: netip.MustParseAddr(addr), flows: conntrack.New(64)}
		for _, p := range out {
			var info packet.Info
			if err := packet.Parse(p, &info); err != nil {
				t.Fatalf("device packet: %v", err)
			}
			if info.Src != ss.addr {
				t.Fatalf("device packet from %s, device is %s", info.Src, ss.addr)
			}
			ss.flows.Add(conntrack.FlowOf(&info), t0)
		}
		return ss
	}
	f.me, f.other = mk(me, meOut), mk(other, otherOut)
	f.srv.byAddr.store(f.me.addr, f.me)
	f.srv.byAddr.store(f.other.addr, f.other)
	return f
}

var t0 = time.Unix(1_700_000_000, 0)

// TestAdmit is the LAN -> device gate, packet by packet, with what an
// attacker on the LAN would try.
func TestAdmit(t *testing.T) {
	const (
		me, other, host, router = "10.8.0.2", "10.8.0.3", "192.168.77.10", "192.168.77.1"
		me6, other6, host6      = "fd00:8::2", "fd00:8::3", "fd00:77::10"
	)
	// What the devices sent (and so opened).
	meTCP := ipv4(packet.ProtoTCP, me, host, l4(packet.ProtoTCP, 40000, 443, 0, 0))
	meUDP := ipv4(packet.ProtoUDP, me, host, l4(packet.ProtoUDP, 5000, 53, 0, 0))
	mePing := ipv4(packet.ProtoICMP, me, host, l4(packet.ProtoICMP, 0, 0, 8, 7))
	otherUDP := ipv4(packet.ProtoUDP, other, host, l4(packet.ProtoUDP, 6000, 53, 0, 0))
	me6UDP := ipv6(packet.ProtoUDP, me6, host6, l4(packet.ProtoUDP, 5000, 53, 0, 0))
	me6Ping := ipv6(packet.ProtoICMPv6, me6, host6, l4(packet.ProtoICMPv6, 0, 0, 128, 7))
	other6UDP := ipv6(packet.ProtoUDP, other6, host6, l4(packet.ProtoUDP, 6000, 53, 0, 0))

	quote := func(p []byte, n int) []byte { return p[:n] } // routers quote a prefix
	meTCPQuote := quote(meTCP, 28)                         // IP header + 8 bytes
	badIHL := append([]byte{0x41}, meTCPQuote[1:]...)
	fragQuote := append([]byte(nil), meTCPQuote...)
	binary.BigEndian.PutUint16(fragQuote[6:], 185) // fragment offset 185*8: no ports in it
	// The device itself sent a port unreachable to host (so that flow is in
	// its table); an error about that error must still not get in.
	meErr := icmpErr(false, 3, me, host, quote(ipv4(packet.ProtoUDP, host, me, l4(packet.ProtoUDP, 7, 9999, 0, 0)), 28), 0)
	errAboutErr := quote(meErr, 28)
	otherDirection := quote(ipv4(packet.ProtoTCP, host, me, l4(packet.ProtoTCP, 443, 40000, 0, 0)), 28)

	v4 := []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"tcp reply", ipv4(packet.ProtoTCP, host, me, l4(packet.ProtoTCP, 443, 40000, 0, 0)), true},
		{"tcp from another port", ipv4(packet.ProtoTCP, host, me, l4(packet.ProtoTCP, 444, 40000, 0, 0)), false},
		{"echo reply to the live ping", ipv4(packet.ProtoICMP, host, me, l4(packet.ProtoICMP, 0, 0, 0, 7)), true},
		{"echo REQUEST with the live ping's id", ipv4(packet.ProtoICMP, host, me, l4(packet.ProtoICMP, 0, 0, 8, 7)), false},
		{"echo reply with another id", ipv4(packet.ProtoICMP, host, me, l4(packet.ProtoICMP, 0, 0, 0, 8)), false},
		{"frag needed from a router quoting my TCP flow", icmpErr(false, 3, router, me, meTCPQuote, 0), true},
		{"port unreachable quoting my UDP flow", icmpErr(false, 3, host, me, quote(meUDP, 28), 0), true},
		{"time exceeded quoting my ping", icmpErr(false, 11, router, me, quote(mePing, 28), 0), true},
		{"error quoting the whole packet, 576 bytes", icmpErr(false, 3, router, me, meTCP, 576-28-len(meTCP)), true},
		{"error quoting another device's flow", icmpErr(false, 3, router, me, quote(otherUDP, 28), 0), false},
		{"error quoting a flow that does not exist", icmpErr(false, 3, router, me, quote(ipv4(packet.ProtoTCP, me, host, l4(packet.ProtoTCP, 40001, 443, 0, 0)), 28), 0), false},
		{"error quoting the reply direction of my flow", icmpErr(false, 3, router, me, otherDirection, 0), false},
		{"oversize error, 577 bytes", icmpErr(false, 3, router, me, meTCP, 577-28-len(meTCP)), false},
		{"truncated quote: ports only half there", icmpErr(false, 3, router, me, quote(meTCP, 26), 0), false},
		{"truncated quote: IP header incomplete", icmpErr(false, 3, router, me, quote(meTCP, 16), 0), false},
		{"quote with a bad IHL", icmpErr(false, 3, router, me, badIHL, 0), false},
		{"quote of a non-first fragment", icmpErr(false, 3, router, me, fragQuote, 0), false},
		{"error about an ICMP error", icmpErr(false, 3, router, me, errAboutErr, 0), false},
		{"v4 error quoting a v6 packet", icmpErr(false, 3, router, me, quote(me6UDP, 48), 0), false},
		{"error without a quote", icmpErr(false, 3, router, me, nil, 0), false},
		{"host's own error back at the device, quoting nothing of mine", icmpErr(false, 3, host, me, quote(ipv4(packet.ProtoUDP, host, me, l4(packet.ProtoUDP, 1, 2, 0, 0)), 28), 0), false},
		{"error addressed to another device, quoting my flow", icmpErr(false, 3, router, other, meTCPQuote, 0), false},
		{"redirect quoting my flow is not an error we take", icmpErr(false, 5, router, me, meTCPQuote, 0), false},
	}
	v6 := []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"echo reply to the live ping", ipv6(packet.ProtoICMPv6, host6, me6, l4(packet.ProtoICMPv6, 0, 0, 129, 7)), true},
		{"echo REQUEST with the live ping's id", ipv6(packet.ProtoICMPv6, host6, me6, l4(packet.ProtoICMPv6, 0, 0, 128, 7)), false},
		{"packet too big quoting my UDP flow", icmpErr(true, 2, "fd00:77::1", me6, me6UDP, 0), true},
		{"time exceeded quoting my ping", icmpErr(true, 3, "fd00:77::1", me6, quote(me6Ping, 48), 0), true},
		{"error of exactly 1280 bytes", icmpErr(true, 1, host6, me6, me6UDP, 1280-48-len(me6UDP)), true},
		{"oversize error, 1281 bytes", icmpErr(true, 1, host6, me6, me6UDP, 1281-48-len(me6UDP)), false},
		{"error quoting another device's flow", icmpErr(true, 2, "fd00:77::1", me6, other6UDP, 0), false},
		{"error quoting a flow that does not exist", icmpErr(true, 1, host6, me6, ipv6(packet.ProtoUDP, me6, host6, l4(packet.ProtoUDP, 5001, 53, 0, 0)), 0), false},
		{"truncated quote: ports only half there", icmpErr(true, 2, host6, me6, quote(me6UDP, 44), 0), false},
		{"truncated quote: IPv6 header incomplete", icmpErr(true, 2, host6, me6, quote(me6UDP, 30), 0), false},
		{"v6 error quoting a v4 packet", icmpErr(true, 1, host6, me6, quote(meUDP, 28), 0), false},
	}

	f := newAdmitFixture(t, me, other, [][]byte{meTCP, meUDP, mePing, meErr}, [][]byte{otherUDP})
	f6 := newAdmitFixture(t, me6, other6, [][]byte{me6UDP, me6Ping}, [][]byte{other6UDP})
	run := func(ss *session, name string, pkt []byte, want bool) {
		t.Run(name, func(t *testing.T) {
			var info packet.Info
			before := ss.drops.Load(tunnel.DropNoFlow) + ss.drops.Load(tunnel.DropMalformed)
			if got := ss.admit(append([]byte(nil), pkt...), &info, t0.Add(time.Second)); got != want {
				t.Fatalf("admit = %v, want %v", got, want)
			}
			if dropped := ss.drops.Load(tunnel.DropNoFlow) + ss.drops.Load(tunnel.DropMalformed) - before; dropped != map[bool]uint64{true: 0, false: 1}[want] {
				t.Fatalf("drop counters moved by %d", dropped)
			}
		})
	}
	for _, tt := range v4 {
		run(f.me, "v4/"+tt.name, tt.pkt, tt.want)
	}
	for _, tt := range v6 {
		run(f6.me, "v6/"+tt.name, tt.pkt, tt.want)
	}
	// The other device's own flow still works for it: the refusal above is
	// about whose flow is quoted, not about the flow.
	run(f.other, "v4/the other device gets the error about its own flow", icmpErr(false, 3, router, other, quote(otherUDP, 28), 0), true)
}
