package server

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/sallyport/sallyport/internal/testenv"
	"github.com/vishvananda/netlink"
)

// inNetns runs fn in a throwaway network namespace (testenv.InNetns).
func inNetns(t *testing.T, fn func()) {
	t.Helper()
	testenv.InNetns(t, "network namespaces and nftables", fn)
}

// inetTables lists the inet tables with their chains' rule counts.
func inetTables(t *testing.T) map[string]map[string]int {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]int{}
	chains, err := c.ListChains()
	if err != nil {
		t.Fatal(err)
	}
	ts, _ := c.ListTablesOfFamily(nftables.TableFamilyINet)
	for _, tb := range ts {
		out[tb.Name] = map[string]int{}
	}
	for _, ch := range chains {
		if ch.Table.Family != nftables.TableFamilyINet {
			continue
		}
		rs, err := c.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		out[ch.Table.Name][ch.Name] = len(rs)
	}
	return out
}

// TestNATTable: the masquerade table appears with one rule per pool and
// interface, is replaced (not doubled) when installed again, disappears
// on removal, and the admin's own table is never touched.
func TestNATTable(t *testing.T) {
	inNetns(t, func() {
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		admin := c.AddTable(&nftables.Table{Name: "admin", Family: nftables.TableFamilyINet})
		c.AddChain(&nftables.Chain{Name: "input", Table: admin, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		spec := natSpec{Table: natTableName("sp0"), Out: []string{"eth1", "eth2"},
			Pools: []netip.Prefix{netip.MustParsePrefix("10.8.0.0/24"), netip.MustParsePrefix("fd00:8::/64")}}
		for range 2 {
			if err := installNAT(spec); err != nil {
				t.Fatal(err)
			}
			got := inetTables(t)
			if got["sallyport-gw-sp0"]["postrouting"] != 4 || len(got["sallyport-gw-sp0"]) != 1 {
				t.Fatalf("after install: %v", got)
			}
			if _, ok := got["admin"]["input"]; !ok {
				t.Fatalf("admin table touched: %v", got)
			}
		}
		for range 2 { // removing twice is fine
			if err := removeNAT(spec.Table); err != nil {
				t.Fatal(err)
			}
		}
		got := inetTables(t)
		if _, ok := got["sallyport-gw-sp0"]; ok {
			t.Fatalf("table left after remove: %v", got)
		}
		if _, ok := got["admin"]["input"]; !ok {
			t.Fatalf("admin table touched: %v", got)
		}
	})
}

// TestAutoInterfaces: "auto" finds the interface of the default route for
// 0.0.0.0/0 and the one a LAN route goes through, never the TUN.
func TestAutoInterfaces(t *testing.T) {
	inNetns(t, func() {
		for i, spec := range []struct{ name, addr string }{{"wan0", "192.0.2.1/24"}, {"lan0", "198.51.100.1/24"}, {"sp0", "10.8.0.1/24"}} {
			la := netlink.NewLinkAttrs()
			la.Name = spec.name
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: spec.name + "p"}); err != nil {
				t.Fatalf("add %s: %v", spec.name, err)
			}
			if p, err := netlink.LinkByName(spec.name + "p"); err == nil {
				_ = netlink.LinkSetUp(p)
			}
			l, _ := netlink.LinkByName(spec.name)
			a, _ := netlink.ParseAddr(spec.addr)
			if err := netlink.AddrAdd(l, a); err != nil {
				t.Fatal(err)
			}
			if err := netlink.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("192.0.2.254")}); err != nil {
					t.Fatal(err)
				}
			}
		}
		tests := []struct {
			routes []string
			want   []string
		}{
			{[]string{"0.0.0.0/0"}, []string{"wan0"}},
			{[]string{"198.51.100.0/24"}, []string{"lan0"}},
			{[]string{"198.51.100.0/24", "203.0.113.0/24", "0.0.0.0/0"}, []string{"lan0", "wan0"}}, // 203.0.113/24 goes by default
			{[]string{"10.8.0.0/24"}, nil},                                                         // only the TUN
			{[]string{"::/0"}, nil},                                                                // no v6 default route
		}
		for _, tt := range tests {
			var rs []netip.Prefix
			for _, r := range tt.routes {
				rs = append(rs, netip.MustParsePrefix(r))
			}
			got, err := autoInterfaces(rs, "sp0")
			if err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("autoInterfaces(%v) = %v, %v; want %v", tt.routes, got, err, tt.want)
			}
		}
	})
}
