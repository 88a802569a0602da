package e2e

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestAddressChange: the laptop reconnects and is given a different address
// in the same subnet (the gateway restarts with a static address for it).
// The tunnel must end up with exactly the new address and carry traffic:
// before the fix, adding the new address as a secondary and deleting the
// old primary removed both, and the laptop said connected with no IPv4.
func TestAddressChange(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	sock := shortTempDir(t)
	sc := defaultServerConf(k, "wireguard", sock)
	gw := tp.startGateway(sc)
	lap := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	lap.waitUp(15 * time.Second)
	if got := tp.ping(tp.Lap, lanHost, 2); got != 2 {
		t.Fatalf("ping before the address change: %d/2", got)
	}
	s, ok := gw.Session("alice")
	if !ok {
		t.Fatal("no session for alice")
	}
	old, err := netip.ParseAddr(strings.Split(s.Address, "/")[0])
	if err != nil {
		t.Fatalf("session address %q: %v", s.Address, err)
	}
	// A static address in the same pool (same subnet on the laptop), not the old one.
	next := netip.MustParseAddr("10.213.0.77")
	if old == next {
		next = netip.MustParseAddr("10.213.0.78")
	}

	if !gw.Proc.Stop(10 * time.Second) {
		t.Fatal("server did not exit within 10 s of SIGTERM")
	}
	waitFor(5*time.Second, func() bool { st, err := lap.Status(); return err == nil && !st.Connected })
	sc.Extra = "[[device]]\ncn = \"alice\"\nipv4 = \"" + next.String() + "\"\n"
	render(t, serverTmpl, sc, gw.Conf)
	gw.Start()
	if !waitFor(20*time.Second, func() bool { s, ok := gw.Session("alice"); return ok && strings.HasPrefix(s.Address, next.String()) }) {
		s, _ := gw.Session("alice")
		t.Fatalf("laptop did not reconnect with %s within 20 s (session %+v)\n%s", next, s, tail(gw.Proc.Log(), 20))
	}
	st := lap.waitUp(10 * time.Second)
	t.Logf("address %s -> %s (laptop reports %s)", old, next, st.Address)

	// Exactly the new address on the laptop's tunnel, none other.
	out := run(t, "ip", "-n", tp.Lap, "-4", "-o", "addr", "show", "dev", "sp0")
	var addrs []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) >= 4 && f[2] == "inet" {
			addrs = append(addrs, strings.Split(f[3], "/")[0])
		}
	}
	if len(addrs) != 1 || addrs[0] != next.String() {
		t.Errorf("IPv4 on the laptop's sp0 = %v, want only %s:\n%s", addrs, next, out)
	}
	if !waitFor(5*time.Second, func() bool { return tp.ping(tp.Lap, lanHost, 1) == 1 }) {
		t.Fatalf("no traffic through the tunnel after the address change; routes on sp0:\n%s", strings.Join(routesOn(tp.Lap, "sp0"), "\n"))
	}
	if c := countRoute(routesOn(tp.Lap, "sp0"), lanNet); c != 1 {
		t.Errorf("route %s on sp0 appears %d times, want 1", lanNet, c)
	}
}
