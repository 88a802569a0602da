package policyroute

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/sallyport/sallyport/internal/testenv"
	"github.com/sallyport/sallyport/tunnel"
)

// vethUp makes a veth pair in the current namespace, with addr on name and
// a default route via gw; it stands for the laptop's physical link.
func vethUp(t *testing.T, name string, addr netip.Prefix, gw netip.Addr) {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = name
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: name + "p"}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	for _, n := range []string{name, name + "p"} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	l, _ := netlink.LinkByName(name)
	if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipNet(addr)}); err != nil {
		t.Fatal(err)
	}
	if gw.IsValid() {
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IP(gw.AsSlice())}); err != nil {
			t.Fatal(err)
		}
	}
}

// lanUp is the laptop's physical link for the routing tests: lan0 with
// 192.168.50.2/24 and 2001:db8:50::2/64 and a default route of each family
// (so a leak of either would have a way out).
func lanUp(t *testing.T) netlink.Link {
	t.Helper()
	vethUp(t, "lan0", netip.MustParsePrefix("192.168.50.2/24"), netip.MustParseAddr("192.168.50.1"))
	lan, _ := netlink.LinkByName("lan0")
	if err := netlink.AddrAdd(lan, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("2001:db8:50::2/64")), Flags: 0x02 /* IFA_F_NODAD */}); err != nil {
		t.Fatal(err)
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: lan.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("::/0")), Gw: net.ParseIP("2001:db8:50::1")}); err != nil {
		t.Fatal(err)
	}
	return lan
}

// routeDev is the device the kernel would send dst out of (with fwmark
// mark), as `ip route get` says.
func routeDev(t *testing.T, dst string, mark uint32) string {
	t.Helper()
	rs, err := netlink.RouteGetWithOptions(net.ParseIP(dst), &netlink.RouteGetOptions{Mark: mark})
	if err != nil {
		return "error: " + err.Error()
	}
	if len(rs) == 0 {
		return "none"
	}
	l, err := netlink.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		return "unknown"
	}
	return l.Attrs().Name
}

// The routes and rules appear, read back as installed, are idempotent,
// and steer traffic the way the client's plan says: a pushed prefix into
// the TUN even against a more specific route in main (TunnelVision), the
// marked gateway connection outside it, the laptop's own LAN outside it,
// IPv6 refused; and they go again without leaving anything.
func TestPolicyRouting(t *testing.T) {
	inNetns(t, func() {
		lan := lanUp(t)
		if got := routeDev(t, "2001:db8::1", 0); got != "lan0" {
			t.Fatalf("before: IPv6 goes out %q, want lan0", got)
		}
		dev, err := tunnel.OpenDevice(testDevName(), "water", 1400)
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		name := dev.Name()
		if err := tunnel.SetAddress(name, netip.MustParsePrefix("10.213.0.2/24")); err != nil {
			t.Fatal(err)
		}
		if err := tunnel.LinkUp(name, 1400); err != nil {
			t.Fatal(err)
		}
		// A v6 address beside the v4 one, then removed: v4 stays.
		v6 := netip.MustParsePrefix("fd00:213::2/64")
		if err := tunnel.SetAddress(name, v6); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := RemoveAddress(name, v6); err != nil {
				t.Fatal(err)
			}
		}
		link, _ := netlink.LinkByName(name)
		if as, _ := netlink.AddrList(link, netlink.FAMILY_ALL); !slices.ContainsFunc(as, func(a netlink.Addr) bool { return a.IP.String() == "10.213.0.2" }) ||
			slices.ContainsFunc(as, func(a netlink.Addr) bool { return a.IP.String() == "fd00:213::2" }) {
			t.Fatalf("after RemoveAddress: %v", as)
		}
		if err := RemoveAddress("nosuchlink0", v6); err != nil {
			t.Fatal(err)
		}
		const table, mark = 21328, 21328
		routes := []TableRoute{
			{Dst: netip.MustParsePrefix("0.0.0.0/0"), Dev: name, Table: table},
			{Dst: netip.MustParsePrefix("198.19.77.0/24"), Dev: name, Table: table},
			{Dst: netip.MustParsePrefix("::/0"), Table: table, Unreachable: true, Metric: 21328},
		}
		rules := []Rule{
			{Priority: 32700, Table: table, NotMark: mark, SuppressPrefixlen: 0},
			{Priority: 32701, Table: TableMain, SuppressPrefixlen: 0},
			{Priority: 32702, Table: table, NotMark: mark, SuppressPrefixlen: -1},
			{V6: true, Priority: 32700, Table: table, NotMark: mark, SuppressPrefixlen: 0},
			{V6: true, Priority: 32701, Table: TableMain, SuppressPrefixlen: 0},
			{V6: true, Priority: 32702, Table: table, NotMark: mark, SuppressPrefixlen: -1},
		}
		for range 2 { // twice: idempotent
			for _, r := range routes {
				if err := ReplaceTableRoute(r); err != nil {
					t.Fatal(err)
				}
			}
			for _, r := range rules {
				if err := AddRule(r); err != nil {
					t.Fatal(err)
				}
			}
		}
		got, err := TableRoutes(table)
		if err != nil || len(got) != len(routes) {
			t.Fatalf("TableRoutes = %v, %v; want %v", got, err, routes)
		}
		for _, r := range routes {
			if !slices.Contains(got, r) {
				t.Errorf("route %s not read back (have %v)", r, got)
			}
		}
		var have []Rule
		for _, tb := range []int{table, TableMain} {
			rs, err := Rules(tb)
			if err != nil {
				t.Fatal(err)
			}
			have = append(have, rs...)
		}
		if len(have) != len(rules) {
			t.Fatalf("rules read back %v, want %v", have, rules)
		}
		for _, r := range rules {
			if !slices.Contains(have, r) {
				t.Errorf("rule %s not read back (have %v)", r, have)
			}
		}
		// TunnelVision: a hostile DHCP server's more specific route in main.
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: lan.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("198.19.77.0/25")), Gw: net.ParseIP("192.168.50.1")}); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			dst  string
			mark uint32
			want string
		}{
			{"198.19.77.10", 0, name},                     // pushed prefix beats the more specific hostile route
			{"8.8.8.8", 0, name},                          // full tunnel
			{"8.8.8.8", mark, "lan0"},                     // the gateway connection stays outside
			{"198.19.77.10", mark, "lan0"},                // even inside a pushed prefix
			{"192.168.50.7", 0, "lan0"},                   // the laptop's own LAN
			{"2001:db8::1", 0, "error: no route to host"}, // v4-only full tunnel: IPv6 refused, not leaked
			{"2001:db8::1", mark, "lan0"},
		} {
			if got := routeDev(t, c.dst, c.mark); got != c.want {
				t.Errorf("route to %s (mark %d) goes out %q, want %q", c.dst, c.mark, got, c.want)
			}
		}
		conn, err := ConnectedPrefixes(name)
		if err != nil || !slices.Contains(conn, netip.MustParsePrefix("192.168.50.0/24")) || slices.Contains(conn, netip.MustParsePrefix("10.213.0.0/24")) {
			t.Errorf("ConnectedPrefixes = %v, %v", conn, err)
		}
		for range 2 {
			for _, r := range rules {
				if err := DeleteRule(r); err != nil {
					t.Fatal(err)
				}
			}
			for _, r := range routes {
				if err := DeleteTableRoute(r); err != nil {
					t.Fatal(err)
				}
			}
		}
		if got, _ := TableRoutes(table); len(got) != 0 {
			t.Errorf("routes left: %v", got)
		}
		for _, tb := range []int{table, TableMain} {
			if rs, _ := Rules(tb); len(rs) != 0 {
				t.Errorf("rules left: %v", rs)
			}
		}
	})
}

// A route through the TUN with an unreachable route behind it (a higher
// metric) for the same prefix, both families: both are installed side by
// side and read back, replacing the TUN's route again leaves the one
// behind it, traffic goes into the TUN while it lives and is refused, not
// sent out the LAN, once it is gone (the client crashed); deleting one
// leaves the other.
func TestFallbackRoute(t *testing.T) {
	inNetns(t, func() {
		lanUp(t)
		dev, err := tunnel.OpenDevice(testDevName(), "water", 1400)
		if err != nil {
			t.Fatal(err)
		}
		name := dev.Name()
		if err := tunnel.LinkUp(name, 1400); err != nil {
			t.Fatal(err)
		}
		const table, mark, metric = 21328, 21328, 21328
		var routes []TableRoute
		for _, p := range []string{"198.19.77.0/24", "2001:db8:77::/48"} {
			dst := netip.MustParsePrefix(p)
			routes = append(routes, TableRoute{Dst: dst, Dev: name, Table: table}, TableRoute{Dst: dst, Table: table, Unreachable: true, Metric: metric})
		}
		rules := []Rule{
			{Priority: 32700, Table: table, NotMark: mark, SuppressPrefixlen: 0},
			{V6: true, Priority: 32700, Table: table, NotMark: mark, SuppressPrefixlen: 0},
		}
		for range 2 { // twice: a replace of one metric leaves the other
			for _, r := range routes {
				if err := ReplaceTableRoute(r); err != nil {
					t.Fatal(err)
				}
			}
		}
		for _, r := range rules {
			if err := AddRule(r); err != nil {
				t.Fatal(err)
			}
		}
		defer func() {
			for _, r := range rules {
				_ = DeleteRule(r)
			}
		}()
		got, err := TableRoutes(table)
		if err != nil || len(got) != len(routes) {
			t.Fatalf("TableRoutes = %v, %v; want %v", got, err, routes)
		}
		for _, r := range routes {
			if !slices.Contains(got, r) {
				t.Errorf("route %s not read back (have %v)", r, got)
			}
		}
		for _, dst := range []string{"198.19.77.10", "2001:db8:77::10"} {
			if got := routeDev(t, dst, 0); got != name {
				t.Errorf("with the TUN up, %s goes out %q, want %s", dst, got, name)
			}
		}
		// Deleting the TUN's route leaves the one behind it, and back.
		if err := DeleteTableRoute(routes[0]); err != nil {
			t.Fatal(err)
		}
		if got, _ := TableRoutes(table); len(got) != 3 || !slices.Contains(got, routes[1]) {
			t.Fatalf("after deleting %s: %v", routes[0], got)
		}
		if err := ReplaceTableRoute(routes[0]); err != nil {
			t.Fatal(err)
		}
		// The TUN goes (the client is killed): its routes go with it, the
		// unreachable ones stay and refuse, for both families.
		dev.Close()
		if got, _ := TableRoutes(table); len(got) != 2 || !slices.Contains(got, routes[1]) || !slices.Contains(got, routes[3]) {
			t.Fatalf("after the TUN went: %v, want only the unreachable routes", got)
		}
		for _, dst := range []string{"198.19.77.10", "2001:db8:77::10"} {
			if got := routeDev(t, dst, 0); got != "error: no route to host" {
				t.Errorf("with the TUN gone, %s goes out %q, want refused", dst, got)
			}
		}
		for _, r := range routes {
			if err := DeleteTableRoute(r); err != nil {
				t.Fatal(err)
			}
		}
		if got, _ := TableRoutes(table); len(got) != 0 {
			t.Errorf("routes left: %v", got)
		}
	})
}

// inNetns runs fn in a throwaway network namespace (testenv.InNetns).
func inNetns(t *testing.T, fn func()) {
	t.Helper()
	testenv.InNetns(t, "network namespaces", fn)
}

// testDevName is a TUN name of this test process (namespaced anyway).
func testDevName() string { return fmt.Sprintf("sprt%d", os.Getpid()%10000) }
