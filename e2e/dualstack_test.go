package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// IPv6 of the tunnel and the LAN for the gateway half of issue 10.
const (
	pool6Net  = "fd00:213::/112"
	lanNet6   = "fd00:77::/64"
	gwLan6Gw  = "fd00:77::1"
	lanHost6b = "fd00:77::10"
)

// lanIPv6 puts IPv6 on the gateway<->LAN link (the LAN host routes back
// through the gateway) and turns on IPv6 forwarding in the gateway.
func (tp *Topo) lanIPv6() {
	t := tp.t
	t.Helper()
	run(t, "ip", "-n", tp.GW, "addr", "add", gwLan6Gw+"/64", "dev", "lan0", "nodad")
	run(t, "ip", "-n", tp.LAN, "addr", "add", lanHost6b+"/64", "dev", "eth0", "nodad")
	run(t, "ip", "-n", tp.LAN, "-6", "route", "add", "default", "via", gwLan6Gw)
	run(t, "ip", "netns", "exec", tp.GW, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
	// Until duplicate address detection of the link-local addresses ends,
	// neighbour discovery between gateway and LAN host does not complete
	// and the first IPv6 packets through the tunnel are lost.
	for _, ns := range []string{tp.GW, tp.LAN} {
		if !waitFor(10*time.Second, func() bool {
			out, _ := tryRun("ip", "-n", ns, "-6", "addr", "show", "tentative")
			return strings.TrimSpace(out) == ""
		}) {
			t.Fatalf("IPv6 addresses in %s still tentative after 10 s", ns)
		}
	}
}

// TestDualStack covers issue 10's IPv6 on the gateway, for both drivers: a
// dual-stack gateway gives the laptop one address of each family; an IPv6
// ping and an 8 MB TCP transfer (content checked) reach the LAN host's
// IPv6 address; an IPv6 packet outside the policy and IPv6 packets with a
// forged source are dropped and counted; status shows both addresses. On
// the first driver it also restarts the gateway: a device keeps its IPv4
// and IPv6 addresses (bob, who got the first ones, stays away, so a fresh
// pool would hand alice his).
func TestDualStack(t *testing.T) {
	requireRoot(t)
	for i, drv := range drivers {
		t.Run(drv, func(t *testing.T) {
			tp := newTopo(t, i == 0) // bob, on the first driver, is a second laptop
			tp.lanIPv6()
			k := stdPKI(t)
			sock := shortTempDir(t)
			pol := Policy{Name: "engineering", Match: map[string][]string{"ou": {"eng"}},
				Allow:  []string{lanNet + " tcp/5201", lanNet + " icmp", lanNet6 + " tcp/5201", lanNet6 + " icmp", lanNet6 + " udp/9999"},
				Routes: []string{lanNet, lanNet6}}
			sc := defaultServerConf(k, drv, sock, pol)
			sc.Pool6 = pool6Net
			gw := tp.startGateway(sc)

			var bob *Laptop
			if i == 0 {
				bob = tp.startLaptop(tp.Lap2, "bob", clientConf(k, "bob", drv, sock))
				bob.waitUp(15 * time.Second)
			}
			lap := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", drv, sock))
			st := lap.waitUp(15 * time.Second)
			sess, ok := gw.Session("alice")
			if !ok || sess.Address6 == "" || !strings.HasPrefix(st.Address6, sess.Address6+"/") {
				t.Fatalf("alice: gateway session %+v, laptop status %+v: want an IPv6 tunnel address on both", sess, st)
			}
			t.Logf("alice has %s and %s", sess.Address, sess.Address6)
			// bob leaves now: two clients in one namespace claiming the same
			// prefixes each have a rule ahead of main (client/route.go), and
			// the one installed first (bob's) would carry alice's traffic.
			var bs Session
			if bob != nil {
				bs, _ = gw.Session("bob")
				if !bob.Proc.Stop(10 * time.Second) {
					t.Fatal("bob's client did not stop")
				}
			}

			if got := tp.ping(tp.Lap, lanHost6b, 3); got != 3 {
				s, _ := gw.Session("alice")
				t.Fatalf("IPv6 ping through the tunnel: %d/3 replies; session %+v\nlaptop routes:\n%s\ngateway routes:\n%s", got, s,
					run(t, "ip", "-n", tp.Lap, "-6", "route", "show", "table", "all"), run(t, "ip", "-n", tp.GW, "-6", "route", "show")+run(t, "ip", "-n", tp.GW, "-6", "neigh")+run(t, "ip", "-n", tp.LAN, "-6", "addr")+run(t, "ip", "-n", tp.LAN, "-6", "maddr")+run(t, "ip", "netns", "exec", tp.LAN, "sysctl", "net.ipv6.conf.eth0.disable_ipv6", "net.ipv6.conf.eth0.accept_dad", "net.ipv6.conf.eth0.forwarding"))
			}
			sink := tp.helper(tp.LAN, "tcpsink", "["+lanHost6b+"]:5201")
			waitReady(t, sink)
			tp.transfer(tp.Lap, "["+lanHost6b+"]:5201", 8<<20)
			if from := field(sink.Out(), "from"); !strings.HasPrefix(from, "["+sess.Address6+"]:") {
				t.Fatalf("LAN host saw the transfer from %s, want alice's tunnel address %s (routed mode)", from, sess.Address6)
			}

			// Policy: UDP to another port of the LAN host is not allowed.
			before, _ := gw.Session("alice")
			if out, _ := tp.helperRun(10*time.Second, tp.Lap, "udpany", "["+lanHost6b+"]:9998", "not-allowed"); field(out, "sent") != "1" {
				t.Fatalf("udp send: %s", out)
			}
			// Anti-spoofing: another address of the pool, and a LAN address.
			for _, src := range []string{"fd00:213::99", "fd00:77::66"} {
				if out, _ := tp.helperRun(10*time.Second, tp.Lap, "udpforge", src, "["+lanHost6b+"]:9999", "forged"); field(out, "error") != "" {
					t.Fatalf("udpforge %s: %s", src, out)
				}
			}
			var after Session
			if !waitFor(5*time.Second, func() bool {
				after, _ = gw.Session("alice")
				return after.Dropped.Policy > before.Dropped.Policy && after.Dropped.Spoofed >= before.Dropped.Spoofed+2
			}) {
				t.Fatalf("drops not counted: before %+v after %+v", before.Dropped, after.Dropped)
			}
			t.Logf("dropped policy %d -> %d, spoofed %d -> %d", before.Dropped.Policy, after.Dropped.Policy, before.Dropped.Spoofed, after.Dropped.Spoofed)
			// The laptop kernel's own chatter (ND, MLD) is never counted as spoofed.
			if after.Dropped.Spoofed > before.Dropped.Spoofed+2 {
				t.Fatalf("spoofed counted %d, want exactly the 2 forged packets", after.Dropped.Spoofed-before.Dropped.Spoofed)
			}
			if i != 0 {
				return
			}

			// Restart: alice keeps her addresses although bob, who held the
			// first ones, is gone.
			if !gw.Proc.Stop(10 * time.Second) {
				t.Fatal("gateway did not stop")
			}
			if b, err := os.ReadFile(filepath.Join(filepath.Dir(gw.Conf), "leases.json")); err != nil || !strings.Contains(string(b), sess.Address6) {
				t.Fatalf("lease file after stop: %v\n%s", err, b)
			}
			gw.Start()
			var again Session
			if !waitFor(20*time.Second, func() bool { again, ok = gw.Session("alice"); return ok }) {
				t.Fatalf("alice did not reconnect:\n%s", tail(lap.Proc.Log(), 20))
			}
			if again.Address != sess.Address || again.Address6 != sess.Address6 {
				t.Fatalf("after a gateway restart alice has %s %s, had %s %s (bob had %s %s)", again.Address, again.Address6,
					sess.Address, sess.Address6, bs.Address, bs.Address6)
			}
			if got := tp.ping(tp.Lap, lanHost6b, 2); got != 2 {
				t.Fatalf("IPv6 ping after the restart: %d/2", got)
			}
		})
	}
}
