package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
)

// An "internet" host in a fourth namespace behind the gateway's wan0. It
// has no route to the tunnel pools: only NAT on the gateway gets replies
// back.
const (
	gwWan    = "203.0.113.1"
	inetHost = "203.0.113.10"
	gwWan6   = "fd00:203::1"
	inetHst6 = "fd00:203::10"
)

// internet adds the internet namespace, wired to the gateway's wan0, and
// makes it the gateway's default route (both families).
func (tp *Topo) internet() string {
	t := tp.t
	t.Helper()
	ns := strings.TrimSuffix(tp.Lap, "-lap") + "-inet"
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _, _ = tryRun("ip", "netns", "del", ns) })
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	run(t, "ip", "-n", tp.GW, "link", "add", "wan0", "type", "veth", "peer", "name", "eth0", "netns", ns)
	run(t, "ip", "-n", tp.GW, "addr", "add", gwWan+"/24", "dev", "wan0")
	run(t, "ip", "-n", tp.GW, "addr", "add", gwWan6+"/64", "dev", "wan0", "nodad")
	run(t, "ip", "-n", tp.GW, "link", "set", "wan0", "up")
	run(t, "ip", "-n", ns, "addr", "add", inetHost+"/24", "dev", "eth0")
	run(t, "ip", "-n", ns, "addr", "add", inetHst6+"/64", "dev", "eth0", "nodad")
	run(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	run(t, "ip", "-n", tp.GW, "route", "add", "default", "via", inetHost)
	run(t, "ip", "-n", tp.GW, "-6", "route", "add", "default", "via", inetHst6)
	for _, n := range []string{tp.GW, ns} {
		if !waitFor(10*time.Second, func() bool {
			out, _ := tryRun("ip", "-n", n, "-6", "addr", "show", "tentative")
			return strings.TrimSpace(out) == ""
		}) {
			t.Fatalf("IPv6 addresses in %s still tentative after 10 s", n)
		}
	}
	return ns
}

// natRules returns the number of rules in the postrouting chain of table
// inet name in namespace ns, or -1 when the table does not exist.
func natRules(t *testing.T, ns, name string) int {
	t.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatalf("netns %s: %v", ns, err)
	}
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range ts {
		if tb.Name != name {
			continue
		}
		rs, err := c.GetRules(tb, &nftables.Chain{Name: "postrouting", Table: tb})
		if err != nil {
			t.Fatalf("rules of inet %s: %v", name, err)
		}
		return len(rs)
	}
	return -1
}

// TestMasquerade covers issue 10's NAT: a full tunnel (0.0.0.0/0 and ::/0
// pushed) with masquerade = ["wan0"] on a dual-stack gateway reaches an
// internet host that has no route back to the pools, over IPv4 and IPv6,
// and that host sees the gateway's address; the LAN, not behind a
// masqueraded interface, still sees the device's own address; the NAT
// table exists only while the gateway runs. Restarted with ["auto"], the
// gateway NATs out of both interfaces behind the pushed routes (wan0 for
// the default routes, lan0 for the LAN), and the LAN host sees the gateway.
func TestMasquerade(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t, false)
	tp.lanIPv6()
	inet := tp.internet()
	k := stdPKI(t)
	sock := shortTempDir(t)
	full := Policy{Name: "engineering", Match: map[string][]string{"ou": {"eng"}},
		Allow: []string{"0.0.0.0/0", "::/0"}, Routes: []string{"0.0.0.0/0", "::/0", lanNet}}
	sc := defaultServerConf(k, "wireguard", sock, full)
	sc.Pool6 = pool6Net
	sc.TunnelExtra = `masquerade = ["wan0"]`
	gw := tp.startGateway(sc)
	if !strings.Contains(gw.Proc.Err(), "masquerading the tunnel pools") || !strings.Contains(gw.Proc.Err(), "out=[wan0]") {
		t.Fatalf("gateway did not masquerade out of wan0:\n%s", tail(gw.Proc.Log(), 10))
	}
	if n := natRules(t, tp.GW, "sallyport-gw-sp0"); n != 2 {
		t.Fatalf("NAT table has %d rules, want 2 (one per pool)", n)
	}
	lap := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	lap.waitUp(15 * time.Second)
	sess, _ := gw.Session("alice")

	for _, dst := range []string{inetHost, inetHst6} {
		if got := tp.ping(tp.Lap, dst, 3); got != 3 {
			t.Fatalf("ping %s through the full tunnel: %d/3", dst, got)
		}
	}
	for _, c := range []struct{ ns, listen, want string }{
		{inet, inetHost + ":5201", gwWan + ":"},
		{inet, "[" + inetHst6 + "]:5201", "[" + gwWan6 + "]:"},
		{tp.LAN, lanHost + ":5202", sess.Address + ":"}, // routed: not behind a masqueraded interface
	} {
		sink := tp.helper(c.ns, "tcpsink", c.listen)
		waitReady(t, sink)
		tp.transfer(tp.Lap, c.listen, 1<<20)
		if from := field(sink.Out(), "from"); !strings.HasPrefix(from, c.want) {
			t.Fatalf("%s saw the connection from %s, want %s...", c.listen, from, c.want)
		}
	}

	if !gw.Proc.Stop(10 * time.Second) {
		t.Fatal("gateway did not stop")
	}
	if n := natRules(t, tp.GW, "sallyport-gw-sp0"); n != -1 {
		t.Fatalf("NAT table still there after stop (%d rules)", n)
	}

	// "auto": the interfaces behind the pushed routes, here the default
	// routes' wan0 and the LAN's lan0; now the LAN host sees the gateway.
	sc.TunnelExtra = `masquerade = ["auto"]`
	gw = tp.startGateway(sc)
	if !strings.Contains(gw.Proc.Err(), "out=\"[lan0 wan0]\"") {
		t.Fatalf("auto did not pick lan0 and wan0:\n%s", tail(gw.Proc.Log(), 10))
	}
	if n := natRules(t, tp.GW, "sallyport-gw-sp0"); n != 4 {
		t.Fatalf("NAT table has %d rules, want 4 (two pools, two interfaces)", n)
	}
	if !waitFor(20*time.Second, func() bool { _, ok := gw.Session("alice"); return ok }) {
		t.Fatalf("alice did not reconnect:\n%s", tail(lap.Proc.Log(), 20))
	}
	sink := tp.helper(tp.LAN, "tcpsink", lanHost+":5203")
	waitReady(t, sink)
	tp.transfer(tp.Lap, lanHost+":5203", 1<<20)
	if from := field(sink.Out(), "from"); !strings.HasPrefix(from, gwLanAddr+":") {
		t.Fatalf("with auto the LAN host saw %s, want the gateway's %s", from, gwLanAddr)
	}
	if got := tp.ping(tp.Lap, inetHst6, 2); got != 2 {
		t.Fatalf("IPv6 ping to the internet host with auto: %d/2", got)
	}
}
