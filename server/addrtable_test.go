package server

import (
	"fmt"
	"net/netip"
	"testing"
)

// TestAddrTable: the per-packet session lookup, with the cases a table
// keyed on 32 bits could get wrong: neighbours, IPv6 addresses that share
// their low 32 bits, an IPv4 address equal to an IPv6 one's low bits,
// replacement, removal, and addresses never stored.
func TestAddrTable(t *testing.T) {
	var tab addrTable
	mk := func(a string) *session { return &session{addr: netip.MustParseAddr(a)} }
	a, b := mk("10.8.0.2"), mk("10.8.0.3")
	c, d := mk("fd00:8::a00:2"), mk("fd00:9::a00:2") // same low 32 bits as each other and as 10.0.0.2
	e := mk("10.0.0.2")
	f := mk("10.8.0.9") // dual stack: both addresses lead to it
	f.addr6 = netip.MustParseAddr("fd00:8::9")
	for _, ss := range []*session{a, b, c, d, e, f} {
		tab.store(ss.addr, ss)
	}
	tab.store(f.addr6, f)
	check := func(step string, want map[string]*session) {
		t.Helper()
		for addr, ss := range want {
			if got := tab.lookup(netip.MustParseAddr(addr)); got != ss {
				t.Errorf("%s: lookup(%s) = %v, want %v", step, addr, got, ss)
			}
		}
	}
	check("stored", map[string]*session{
		"10.8.0.2": a, "10.8.0.3": b, "fd00:8::a00:2": c, "fd00:9::a00:2": d, "10.0.0.2": e, "10.8.0.9": f, "fd00:8::9": f,
		"10.8.0.4": nil, "192.168.1.1": nil, "fd00:8::a00:3": nil, "fd00:7::a00:2": nil, "::ffff:10.8.0.2": nil,
	})
	if got := tab.lookup(netip.Addr{}); got != nil {
		t.Errorf("lookup of the zero address = %v", got)
	}

	a2 := mk("10.8.0.2") // the device reconnects: its new session replaces the old
	tab.store(a2.addr, a2)
	tab.store(c.addr, nil)
	check("replaced and removed", map[string]*session{"10.8.0.2": a2, "fd00:8::a00:2": nil, "fd00:9::a00:2": d})
	tab.store(d.addr, nil)
	tab.store(c.addr, c)
	check("collision gone, re-added", map[string]*session{"fd00:8::a00:2": c, "fd00:9::a00:2": nil})
	tab.store(netip.MustParseAddr("99.9.9.9"), nil) // never stored: a no-op that allocates no page
	if tab.v4[99<<4].Load() != nil {
		t.Fatal("removing an address never stored allocated a page")
	}
	tab.store(a2.addr, nil)
	tab.store(b.addr, nil)
	tab.store(c.addr, nil)
	tab.store(e.addr, nil)
	tab.store(f.addr, nil)
	check("dual stack, IPv4 removed", map[string]*session{"10.8.0.9": nil, "fd00:8::9": f})
	tab.store(f.addr6, nil)
	check("all removed", map[string]*session{"10.8.0.2": nil, "10.8.0.3": nil, "fd00:8::a00:2": nil, "10.0.0.2": nil, "fd00:8::9": nil})
	if n := tab.overflowN.Load(); n != 0 || len(tab.overflow) != 0 {
		t.Fatalf("overflow holds %d entries after every address was removed", len(tab.overflow))
	}
}

// TestAddrTableScale: many sessions in, lookups right, all out; and a
// lookup allocates nothing (it runs per packet).
func TestAddrTableScale(t *testing.T) {
	var tab addrTable
	const n = 70000 // more than a /16
	ss := make([]*session, n)
	for i := range ss {
		ss[i] = &session{addr: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})}
		tab.store(ss[i].addr, ss[i])
	}
	for i, s := range ss {
		if got := tab.lookup(s.addr); got != s {
			t.Fatalf("lookup %d (%s) = %v", i, s.addr, got)
		}
	}
	probe := ss[n/2].addr
	if allocs := testing.AllocsPerRun(100, func() { _ = tab.lookup(probe) }); allocs != 0 {
		t.Errorf("lookup allocates %v times", allocs)
	}
	for _, s := range ss {
		tab.store(s.addr, nil)
	}
	for i, s := range ss {
		if got := tab.lookup(s.addr); got != nil {
			t.Fatalf("after removal lookup %d = %v", i, fmt.Sprint(got.addr))
		}
	}
}
