package server

import (
	"crypto/x509"
	"encoding/binary"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/server/conntrack"
	"github.com/sallyport/sallyport/server/policy"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// udp6 builds a UDP/IPv6 packet.
func udp6(src, dst string, sport, dport uint16) []byte {
	return ipv6(packet.ProtoUDP, src, dst, l4(packet.ProtoUDP, sport, dport, 0, 0))
}

// icmp6 builds an ICMPv6 message of type typ.
func icmp6(typ byte, src, dst string) []byte {
	return ipv6(packet.ProtoICMPv6, src, dst, l4(packet.ProtoICMPv6, 0, 0, typ, 0))
}

func dualStack(c *Config) { c.Tunnel.IPv6Pool = "fd00:8::/112" }

// TestDualStackSession: on a dual-stack gateway a device gets one address
// of each family (pushed as address/address6), may send from either and
// from nothing else (a thief tries another pool address, a link-local
// source and the v4-mapped form of its own IPv4 address), its IPv6 flows
// go through the policy and conntrack like IPv4 ones (a packet-too-big
// about its flow comes back), the laptop kernel's neighbour discovery and
// MLD are dropped without being counted or forwarded, and status shows
// both addresses.
func TestDualStackSession(t *testing.T) {
	before := runtime.NumGoroutine()
	h := newGatewayHarnessWith(t, []policy.Policy{{Name: "eng", Match: policy.Match{OU: []string{"eng"}},
		Allow: []string{"192.168.77.0/24 udp/53", "fd00:77::/64 udp/53"}}}, netip.Prefix{}, nil, dualStack)
	d := h.connect(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	if d.addr != "10.8.0.2" || d.cfg.Address6 != netip.MustParsePrefix("fd00:8::2/112") || d.cfg.Gateway6 != netip.MustParseAddr("fd00:8::1") {
		t.Fatalf("pushed config %+v", d.cfg)
	}
	me4, me6 := d.addr, d.addr6
	s, tun := h.s, h.tun

	d.send(t, udp4(me4, "192.168.77.10", 5000, 53))                 // allowed
	d.send(t, udp6(me6, "fd00:77::10", 5000, 53))                   // allowed
	d.send(t, udp6("fd00:8::99", "fd00:77::10", 5000, 53))          // spoofed: another pool address
	d.send(t, udp6("fe80::1", "fd00:77::10", 5000, 53))             // spoofed: link-local source
	d.send(t, udp6("::ffff:"+me4, "fd00:77::10", 5000, 53))         // spoofed: v4-mapped own address
	d.send(t, icmp6(icmpv6RouterSolicit, "fe80::1", "ff02::2"))     // ND: quiet drop
	d.send(t, icmp6(icmpv6NeighborSolicit, "::", "ff02::1:ff00:2")) // DAD: quiet drop
	d.send(t, icmp6(icmpv6NeighborAdvert, me6, "fd00:8::1"))        // from its own address: still never forwarded
	d.send(t, icmp6(icmpv6MLDv2Report, "fe80::1", "ff02::16"))      // MLD: quiet drop
	d.send(t, icmp6(icmpv6MLDReport, "fe80::1", "ff02::1:ff00:2"))
	d.send(t, udp6(me6, "fd00:77::10", 5000, 80)) // outside policy (sent last)
	waitFor(t, func() bool { st := s.Status(); return len(st.Sessions) == 1 && st.Sessions[0].Dropped.Policy == 1 })
	st := s.Status().Sessions[0]
	if st.Dropped.Spoofed != 3 || st.Dropped.Malformed != 0 {
		t.Fatalf("dropped %+v, want 3 spoofed (ND/MLD not counted)", st.Dropped)
	}
	got := tun.packets()
	if len(got) != 2 {
		t.Fatalf("TUN got %d packets, want the two allowed ones", len(got))
	}
	if src, _ := packet.Src(got[1]); src.String() != me6 {
		t.Fatalf("second packet on the TUN from %v", src)
	}
	if st.Address != me4 || st.Address6 != me6 {
		t.Fatalf("status addresses %q %q", st.Address, st.Address6)
	}
	if gs := s.Status(); gs.Address != "10.8.0.1/24" || gs.Address6 != "fd00:8::1/112" {
		t.Fatalf("gateway addresses %q %q", gs.Address, gs.Address6)
	}

	// The reply comes back; an unsolicited packet does not; a packet too
	// big about the device's flow does, one about a flow it never had not.
	tun.in <- udp6("fd00:77::10", me6, 53, 5000)
	if typ, p, ok := d.next(5 * time.Second); !ok || typ != tunnel.FrameData || binary.BigEndian.Uint16(p[40:]) != 53 {
		t.Fatalf("reply frame %#x %v", typ, ok)
	}
	tun.in <- udp6("fd00:77::10", me6, 9999, 5000)
	waitFor(t, func() bool { return s.Status().Sessions[0].Dropped.NoFlow == 1 })
	tun.in <- icmpErr(true, 2, "fd00:77::1", me6, udp6(me6, "fd00:77::10", 5001, 53), 0) // no such flow
	tun.in <- icmpErr(true, 2, "fd00:77::1", me6, udp6(me6, "fd00:77::10", 5000, 53), 0)
	if typ, p, ok := d.next(5 * time.Second); !ok || typ != tunnel.FrameData || p[6] != packet.ProtoICMPv6 || p[40] != 2 {
		t.Fatalf("packet too big: frame %#x %v", typ, ok)
	}
	waitFor(t, func() bool { return s.Status().Sessions[0].Dropped.NoFlow == 2 })

	h.close()
	d.tc.Close()
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
}

// TestV6OnlySession: with only ipv6_pool the device's one address is IPv6,
// pushed in Address, and an IPv4 source is spoofed.
func TestV6OnlySession(t *testing.T) {
	h := newGatewayHarnessWith(t, []policy.Policy{{Name: "all", Match: policy.Match{CN: []string{"*"}},
		Allow: []string{"fd00:77::/64", "192.168.77.0/24"}}}, netip.Prefix{}, nil,
		func(c *Config) { c.Tunnel.IPv4Pool, c.Tunnel.IPv6Pool = "", "fd00:8::/64" })
	defer h.close()
	d := h.connect(h.ca.leafWithKey(t, "bob", nil, x509.ExtKeyUsageClientAuth))
	defer d.tc.Close()
	if d.cfg.Address != netip.MustParsePrefix("fd00:8::2/64") || d.cfg.Address6.IsValid() || d.cfg.MTU < 1280 {
		t.Fatalf("pushed config %+v", d.cfg)
	}
	d.send(t, udp4("10.8.0.2", "192.168.77.10", 5000, 53))
	d.send(t, udp6(d.addr, "fd00:77::10", 5000, 53))
	waitFor(t, func() bool { return len(h.tun.packets()) == 1 })
	waitFor(t, func() bool { return h.s.Status().Sessions[0].Dropped.Spoofed == 1 })
}

// TestForwardFilter6 is the device -> LAN filter of a dual-stack session,
// packet by packet, with what a thief on the laptop would try: every
// source but the device's own two addresses is spoofed, an ICMPv6 type
// next to the neighbour-discovery ones is not waved through, and the
// kernel's ND/MLD is dropped without a count.
func TestForwardFilter6(t *testing.T) {
	const me4, me6, host4, host6 = "10.8.0.2", "fd00:8::2", "192.168.77.10", "fd00:77::10"
	set, err := policy.Compile([]policy.Policy{{Name: "p", Match: policy.Match{CN: []string{"*"}},
		Allow: []string{"192.168.77.0/24 udp/53", "fd00:77::/64 udp/53", "fd00:77::/64 icmp"}}})
	if err != nil {
		t.Fatal(err)
	}
	grant := set.Lookup(pki.Identity{Device: "alice"})
	tests := []struct {
		name string
		pkt  []byte
		want string // "forward", "spoofed", "policy", "quiet"
	}{
		{"v6 allowed", udp6(me6, host6, 5000, 53), "forward"},
		{"v4 allowed", udp4(me4, host4, 5000, 53), "forward"},
		{"v6 echo allowed", icmp6(128, me6, host6), "forward"},
		{"v6 outside policy", udp6(me6, host6, 5000, 80), "policy"},
		{"another pool address", udp6("fd00:8::3", host6, 5000, 53), "spoofed"},
		{"the gateway's address", udp6("fd00:8::1", host6, 5000, 53), "spoofed"},
		{"link-local source", udp6("fe80::1", host6, 5000, 53), "spoofed"},
		{"unspecified source", udp6("::", host6, 5000, 53), "spoofed"},
		{"v4-mapped own IPv4", udp6("::ffff:"+me4, host6, 5000, 53), "spoofed"},
		{"own IPv4 as v4 source of a v6 flow", udp4(me4, host4, 5000, 80), "policy"},
		{"echo from link-local", icmp6(128, "fe80::1", host6), "spoofed"},
		{"router renumbering (138) from link-local", icmp6(138, "fe80::1", "ff02::2"), "spoofed"},
		{"node information (139) from link-local", icmp6(139, "fe80::1", host6), "spoofed"},
		{"router solicitation", icmp6(icmpv6RouterSolicit, "fe80::1", "ff02::2"), "quiet"},
		{"router advertisement", icmp6(icmpv6RouterAdvert, "fe80::1", "ff02::1"), "quiet"},
		{"neighbour solicitation (DAD)", icmp6(icmpv6NeighborSolicit, "::", "ff02::1:ff00:2"), "quiet"},
		{"neighbour advertisement from own address", icmp6(icmpv6NeighborAdvert, me6, host6), "quiet"},
		{"redirect", icmp6(icmpv6Redirect, "fe80::1", host6), "quiet"},
		{"MLD query", icmp6(icmpv6MLDQuery, "fe80::1", "ff02::1"), "quiet"},
		{"MLD report", icmp6(icmpv6MLDReport, "fe80::1", "ff02::1:ff00:2"), "quiet"},
		{"MLD done", icmp6(icmpv6MLDDone, "fe80::1", "ff02::2"), "quiet"},
		{"MLDv2 report", icmp6(icmpv6MLDv2Report, "fe80::1", "ff02::16"), "quiet"},
	}
	names := map[string]tunnel.DropReason{"forward": tunnel.Accept, "spoofed": tunnel.DropSpoofed, "policy": tunnel.DropPolicy, "quiet": tunnel.DropQuiet}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rules{addr: netip.MustParseAddr(me4), addr6: netip.MustParseAddr(me6), grant: grant, flows: conntrack.New(64), others: noOwners{}}
			var info packet.Info
			if err := packet.Parse(tt.pkt, &info); err != nil {
				t.Fatal(err)
			}
			if got := verdictIn(&info, &r, time.Now()); got != names[tt.want] {
				t.Fatalf("%s, want %s", got, tt.want)
			}
		})
	}
}
