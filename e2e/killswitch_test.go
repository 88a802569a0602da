package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// IPv6 on the laptop's physical link and the LAN, so an IPv6 leak has a
// way out (the tunnel itself is IPv4 only here).
const (
	lap6     = "fd00:18::1"
	gw6      = "fd00:18::2"
	gwLan6   = "fd00:77::1"
	lanHost6 = "fd00:77::10"
)

// plainInternet gives the laptop a default route (both families) through
// the gateway namespace, which forwards it to the LAN host like any
// router on the internet would: without the tunnel, traffic to the LAN host
// leaves through eth0 in the clear.
func (tp *Topo) plainInternet() {
	t := tp.t
	t.Helper()
	run(t, "ip", "-n", tp.Lap, "route", "add", "default", "via", gwAddr)
	run(t, "ip", "-n", tp.Lap, "addr", "add", lap6+"/64", "dev", "eth0", "nodad")
	run(t, "ip", "-n", tp.GW, "addr", "add", gw6+"/64", "dev", "lap0", "nodad")
	run(t, "ip", "-n", tp.GW, "addr", "add", gwLan6+"/64", "dev", "lan0", "nodad")
	run(t, "ip", "-n", tp.LAN, "addr", "add", lanHost6+"/64", "dev", "eth0", "nodad")
	run(t, "ip", "-n", tp.Lap, "-6", "route", "add", "default", "via", gw6)
	run(t, "ip", "-n", tp.LAN, "-6", "route", "add", "default", "via", gwLan6)
	run(t, "ip", "netns", "exec", tp.GW, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
}

// leakCheck captures what leaves the laptop's eth0 while it pings the LAN
// host and sends UDP to it over IPv4 and IPv6, and returns the capture's
// counts and the ping's replies.
func (tp *Topo) leakCheck(ms int) (leaks, gw, replies int, out string) {
	tp.t.Helper()
	return tp.probe(ms, lanHost+":9999")
}

// probe is leakCheck with the IPv4 UDP datagram sent to udp4 instead.
func (tp *Topo) probe(ms int, udp4 string) (leaks, gw, replies int, out string) {
	tp.t.Helper()
	capture := tp.helper(tp.Lap, "capture", "eth0", listen, fmt.Sprint(ms))
	waitReady(tp.t, capture)
	replies = tp.ping(tp.Lap, lanHost, 2)
	o4, _ := tp.helperRun(10*time.Second, tp.Lap, "udpany", udp4, "leak?")
	o6, _ := tp.helperRun(10*time.Second, tp.Lap, "udpany", "["+lanHost6+"]:9999", "leak?")
	if !capture.Wait(time.Duration(ms)*time.Millisecond + 10*time.Second) {
		tp.t.Fatal("capture helper did not finish")
	}
	out = capture.Out()
	if field(out, "leaks") == "" {
		tp.t.Fatalf("capture failed: %s %s", out, capture.Err())
	}
	return atoi(field(out, "leaks"), -1), atoi(field(out, "gw"), -1), replies, out + " udp4:" + strings.TrimSpace(o4) + " udp6:" + strings.TrimSpace(o6)
}

// installedStatus is the read-back part of `sallyport status --json`.
type installedStatus struct {
	Connected bool `json:"connected"`
	Installed struct {
		Table      int      `json:"table"`
		Routes     []string `json:"routes"`
		Rules      []string `json:"rules"`
		KillSwitch bool     `json:"kill_switch"`
	} `json:"installed"`
}

func (l *Laptop) installed() (installedStatus, error) {
	var st installedStatus
	out, err := exec.Command("ip", "netns", "exec", l.NS, binPath, "status", "--socket", l.Socket, "--json").Output()
	if err != nil {
		return st, fmt.Errorf("client status: %w: %s", err, out)
	}
	return st, json.Unmarshal(out, &st)
}

// TestFullTunnelKillSwitch covers issue 10's laptop half: a full tunnel
// (pushed 0.0.0.0/0) carries traffic to a host behind the gateway; a more
// specific route a hostile LAN adds to the laptop's main table does not
// take a pushed prefix out of the tunnel (TunnelVision); with the kill
// switch (on by default for a full tunnel), a capture on the laptop's
// physical interface sees nothing but the client's own connection to the
// gateway (no IPv4, no IPv6) while it reconnects and after kill -9, and
// `sallyport down` then restores plain traffic.
func TestFullTunnelKillSwitch(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t, false)
	tp.plainInternet()
	// Plain traffic works before the tunnel, and the capture sees it: the
	// leak checks below can fail.
	if leaks, _, replies, out := tp.leakCheck(1500); leaks == 0 || replies != 2 {
		t.Fatalf("before the tunnel: leaks=%d replies=%d, want plain traffic seen on eth0: %s", leaks, replies, out)
	}
	k := stdPKI(t)
	sock := shortTempDir(t)
	full := Policy{Name: "engineering", Match: map[string][]string{"ou": {"eng"}}, Allow: []string{lanNet}, Routes: []string{"0.0.0.0/0", lanNet}}
	gw := tp.startGateway(defaultServerConf(k, "wireguard", sock, full))
	cc := clientConf(k, "alice", "wireguard", sock)
	lap := tp.startLaptop(tp.Lap, "alice", cc)
	lap.waitUp(15 * time.Second)
	st, err := lap.installed()
	if err != nil || !st.Installed.KillSwitch || len(st.Installed.Rules) != 6 || len(st.Installed.Routes) != 5 {
		t.Fatalf("status read-back %+v %v", st, err)
	}

	// Full tunnel: the LAN host answers through the gateway, nothing leaves
	// eth0 but the tunnel's own connection; IPv6 is refused, not leaked.
	before, _ := gw.Session("alice")
	if leaks, gwPkts, replies, out := tp.leakCheck(1500); leaks != 0 || replies != 2 || gwPkts == 0 {
		t.Fatalf("full tunnel: leaks=%d replies=%d gw=%d: %s", leaks, replies, gwPkts, out)
	}
	if after, _ := gw.Session("alice"); after.PacketsIn <= before.PacketsIn {
		t.Fatalf("gateway saw no packets from alice (%d -> %d)", before.PacketsIn, after.PacketsIn)
	}

	// TunnelVision: a more specific route for the pushed prefix in main.
	run(t, "ip", "-n", tp.Lap, "route", "add", "198.19.77.0/25", "via", gwAddr, "dev", "eth0")
	before, _ = gw.Session("alice")
	if leaks, _, replies, out := tp.leakCheck(1500); leaks != 0 || replies != 2 {
		t.Fatalf("with a hostile /25 in main: leaks=%d replies=%d: %s", leaks, replies, out)
	}
	if after, _ := gw.Session("alice"); after.PacketsIn <= before.PacketsIn {
		t.Fatalf("with a hostile /25 in main the gateway saw no packets from alice")
	}
	run(t, "ip", "-n", tp.Lap, "route", "del", "198.19.77.0/25", "via", gwAddr, "dev", "eth0")

	// The gateway goes away: the client reconnects (its SYNs are the only
	// packets on eth0), nothing else leaves.
	if !gw.Proc.Stop(10 * time.Second) {
		t.Fatal("server did not stop on SIGTERM")
	}
	waitFor(5*time.Second, func() bool { st, err := lap.Status(); return err == nil && !st.Connected })
	leaks, gwPkts, replies, out := tp.leakCheck(3000)
	if leaks != 0 || replies != 0 {
		t.Fatalf("while reconnecting: leaks=%d replies=%d: %s", leaks, replies, out)
	}
	if gwPkts == 0 {
		t.Fatalf("while reconnecting the capture saw no reconnect attempt: %s", out)
	}
	if st, err := lap.installed(); err != nil || !st.Installed.KillSwitch || len(st.Installed.Rules) != 6 {
		t.Fatalf("while reconnecting: status %+v %v", st, err)
	}

	// kill -9: the TUN goes, the kill switch and rules stay.
	lap.Proc.Signal(syscall.SIGKILL)
	if !lap.Proc.Wait(5 * time.Second) {
		t.Fatal("client survived SIGKILL")
	}
	if linkExists(tp.Lap, "sp0") {
		t.Fatal("TUN still there after kill -9")
	}
	if leaks, _, replies, out := tp.leakCheck(2000); leaks != 0 || replies != 0 {
		t.Fatalf("after kill -9: leaks=%d replies=%d: %s", leaks, replies, out)
	}
	if out, err := tp.sp(tp.Lap, "down", "-c", lap.Conf); err != nil || !strings.Contains(out, "removed the kill switch") {
		t.Fatalf("down after kill -9: %v %s", err, out)
	}
	if leaks, _, replies, out := tp.leakCheck(1500); leaks == 0 || replies != 2 {
		t.Fatalf("after down: leaks=%d replies=%d, want plain traffic back: %s", leaks, replies, out)
	}
	if rules := run(t, "ip", "-n", tp.Lap, "rule", "show"); strings.Contains(rules, "0x5350") {
		t.Fatalf("down left rules:\n%s", rules)
	}

	// A new client adopts a kill switch left behind, and a clean down
	// removes everything.
	lap.Proc.Signal(syscall.SIGKILL) // already dead; harmless
	gw.Start()
	lap2 := tp.startLaptop(tp.Lap, "alice2", cc)
	lap2.waitUp(20 * time.Second)
	lap2.Proc.Signal(syscall.SIGKILL)
	lap2.Proc.Wait(5 * time.Second)
	lap3 := tp.startLaptop(tp.Lap, "alice3", cc)
	if !waitFor(15*time.Second, func() bool { return strings.Contains(lap3.Proc.Err(), "kill switch adopted") }) {
		t.Fatalf("a new client did not adopt the kill switch:\n%s", tail(lap3.Proc.Log(), 20))
	}
	lap3.waitUp(20 * time.Second)
	if out, err := tp.sp(tp.Lap, "down", "-c", lap3.Conf); err != nil {
		t.Fatalf("down: %v %s", err, out)
	}
	lap3.Proc.Wait(10 * time.Second)
	if leaks, _, replies, out := tp.leakCheck(1500); leaks == 0 || replies != 2 {
		t.Fatalf("after a clean down: leaks=%d replies=%d, want plain traffic back: %s", leaks, replies, out)
	}
	if bad := leftovers(tp.Lap, "sp0", true); len(bad) > 0 {
		t.Fatalf("down left: %v", bad)
	}
	if out := run(t, "ip", "-n", tp.Lap, "rule", "show"); strings.Contains(out, "0x5350") {
		t.Fatalf("down left rules:\n%s", out)
	}
}

// TestFullTunnelDualStack: a dual-stack gateway pushes an IPv6 address and
// routes = ["0.0.0.0/0", "::/0"]; the laptop puts the address on the TUN
// and ::/0 into its table, and IPv6 to the LAN host goes through the
// tunnel (the LAN host sees the tunnel address), nothing leaves eth0 but
// the tunnel's own connection.
func TestFullTunnelDualStack(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t, false)
	tp.plainInternet()
	k := stdPKI(t)
	sock := shortTempDir(t)
	full := Policy{Name: "engineering", Match: map[string][]string{"ou": {"eng"}}, Allow: []string{lanNet, "fd00:77::/64"},
		Routes: []string{"0.0.0.0/0", "::/0", lanNet}}
	sc := defaultServerConf(k, "wireguard", sock, full)
	sc.Pool6 = "fd00:213::/64"
	tp.startGateway(sc)
	lap := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	lap.waitUp(15 * time.Second)
	var st struct {
		Address6  string `json:"address6"`
		Installed struct {
			Routes     []string `json:"routes"`
			KillSwitch bool     `json:"kill_switch"`
		} `json:"installed"`
	}
	out, err := exec.Command("ip", "netns", "exec", lap.NS, binPath, "status", "--socket", lap.Socket, "--json").Output()
	if err != nil || json.Unmarshal(out, &st) != nil {
		t.Fatalf("status: %v %s", err, out)
	}
	if !strings.HasPrefix(st.Address6, "fd00:213::") || !st.Installed.KillSwitch || !slices.Contains(st.Installed.Routes, "::/0 dev sp0 table 21328") {
		t.Fatalf("status %s", out)
	}
	if a := run(t, "ip", "-n", tp.Lap, "-6", "addr", "show", "dev", "sp0"); !strings.Contains(a, strings.Split(st.Address6, "/")[0]) {
		t.Fatalf("IPv6 tunnel address not on sp0:\n%s", a)
	}
	recv := tp.helper(tp.LAN, "udprecv", "[::]:9999")
	waitReady(t, recv)
	leaks, _, replies, capOut := tp.leakCheck(1500)
	if leaks != 0 || replies != 2 {
		t.Fatalf("dual-stack full tunnel: leaks=%d replies=%d: %s", leaks, replies, capOut)
	}
	want := "recv from=" + strings.Split(st.Address6, "/")[0] + " "
	if !waitFor(5*time.Second, func() bool { return strings.Contains(recv.Out(), want) }) {
		t.Fatalf("LAN host did not get the IPv6 datagram from the tunnel address %s: %q (%s)", st.Address6, recv.Out(), capOut)
	}
}

// TestSplitTunnelVision: a split tunnel without the kill switch. A hostile
// LAN's more specific route for the pushed prefix in the laptop's main
// table (DHCP option 121, TunnelVision) would send the traffic out eth0 in
// the clear, where the gateway namespace would still forward it: only the
// capture tells. The pushed prefix must stay in the tunnel.
func TestSplitTunnelVision(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t, false)
	tp.plainInternet()
	k := stdPKI(t)
	sock := shortTempDir(t)
	split := Policy{Name: "engineering", Match: map[string][]string{"ou": {"eng"}}, Allow: []string{lanNet}, Routes: []string{lanNet}}
	gw := tp.startGateway(defaultServerConf(k, "wireguard", sock, split))
	lap := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	lap.waitUp(15 * time.Second)
	if st, err := lap.installed(); err != nil || st.Installed.KillSwitch || len(st.Installed.Rules) != 1 {
		t.Fatalf("split tunnel read-back %+v %v", st, err)
	}
	run(t, "ip", "-n", tp.Lap, "route", "add", "198.19.77.0/25", "via", gwAddr, "dev", "eth0")
	before, _ := gw.Session("alice")
	capture := tp.helper(tp.Lap, "capture", "eth0", listen, "1500", lanHost)
	waitReady(t, capture)
	if got := tp.ping(tp.Lap, lanHost, 2); got != 2 {
		t.Fatalf("ping %s with a hostile /25 in main: %d/2", lanHost, got)
	}
	capture.Wait(15 * time.Second)
	if leaks := atoi(field(capture.Out(), "leaks"), -1); leaks != 0 {
		t.Fatalf("a more specific route in main took the pushed prefix out of the tunnel: %s", capture.Out())
	}
	if after, _ := gw.Session("alice"); after.PacketsIn < before.PacketsIn+2 {
		t.Fatalf("the pings did not go through the gateway's tunnel (%d -> %d packets)", before.PacketsIn, after.PacketsIn)
	}
}

// TestPushedKillSwitch: the gateway's policy switches the kill switch on
// for a split tunnel (kill_switch = true); the laptop's file says nothing.
// Traffic outside the pushed prefix (here IPv6 to the LAN host, which is
// not pushed) is blocked, the pushed prefix still works through the
// tunnel, and a clean down removes it all.
func TestPushedKillSwitch(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t, false)
	tp.plainInternet()
	k := stdPKI(t)
	sock := shortTempDir(t)
	on := true
	split := Policy{Name: "engineering", Match: map[string][]string{"ou": {"eng"}}, Allow: []string{lanNet}, Routes: []string{lanNet}, KillSwitch: &on}
	tp.startGateway(defaultServerConf(k, "wireguard", sock, split))
	lap := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	lap.waitUp(15 * time.Second)
	if st, err := lap.installed(); err != nil || !st.Installed.KillSwitch {
		t.Fatalf("kill switch not on although the policy pushes it: %+v %v", st, err)
	}
	if leaks, _, replies, out := tp.leakCheck(1500); leaks != 0 || replies != 2 || !strings.Contains(out, "udp6:send_error") {
		t.Fatalf("pushed kill switch: leaks=%d replies=%d: %s", leaks, replies, out)
	}
	if out, err := tp.sp(tp.Lap, "down", "-c", lap.Conf); err != nil {
		t.Fatalf("down: %v %s", err, out)
	}
	lap.Proc.Wait(10 * time.Second)
	if leaks, _, replies, out := tp.leakCheck(1500); leaks == 0 || replies != 2 {
		t.Fatalf("after down: leaks=%d replies=%d, want plain traffic back: %s", leaks, replies, out)
	}
}

// TestDef1FullTunnel: a policy that pushes OpenVPN's def1 routes
// (0.0.0.0/1 + 128.0.0.0/1) instead of 0.0.0.0/0 is a full tunnel all the
// same: the kill switch comes on by default and IPv6, which the v4-only
// tunnel does not carry, is refused instead of leaving in the clear; the
// LAN host is reached through the tunnel.
func TestDef1FullTunnel(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	tp.plainInternet()
	k := stdPKI(t)
	sock := shortTempDir(t)
	def1 := Policy{Name: "engineering", Match: map[string][]string{"ou": {"eng"}}, Allow: []string{lanNet}, Routes: []string{"0.0.0.0/1", "128.0.0.0/1"}}
	gw := tp.startGateway(defaultServerConf(k, "wireguard", sock, def1))
	lap := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	if !waitFor(15*time.Second, func() bool { st, err := lap.Status(); return err == nil && st.Connected }) {
		t.Fatalf("alice did not connect:\n%s", tail(lap.Proc.Log(), 20))
	}
	st, err := lap.installed()
	if err != nil || !st.Installed.KillSwitch || !slices.Contains(st.Installed.Routes, "unreachable ::/0 table 21328 metric 21328") {
		t.Fatalf("def1 is not treated as a full tunnel: %+v %v", st, err)
	}
	before, _ := gw.Session("alice")
	if leaks, gwPkts, replies, out := tp.leakCheck(1500); leaks != 0 || replies != 2 || gwPkts == 0 || !strings.Contains(out, "udp6:send_error") {
		t.Fatalf("def1 full tunnel: leaks=%d replies=%d gw=%d: %s", leaks, replies, gwPkts, out)
	}
	if after, _ := gw.Session("alice"); after.PacketsIn < before.PacketsIn+2 {
		t.Fatalf("the pings did not go through the tunnel (%d -> %d packets)", before.PacketsIn, after.PacketsIn)
	}
}

// lanLeaks captures what leaves the laptop's eth0 for the LAN host while
// the laptop pings it twice, and returns the packets seen and the replies.
func (tp *Topo) lanLeaks(ms int) (leaks, replies int, out string) {
	tp.t.Helper()
	capture := tp.helper(tp.Lap, "capture", "eth0", listen, fmt.Sprint(ms), lanHost)
	waitReady(tp.t, capture)
	replies = tp.ping(tp.Lap, lanHost, 2)
	if !capture.Wait(time.Duration(ms)*time.Millisecond + 10*time.Second) {
		tp.t.Fatal("capture helper did not finish")
	}
	out = capture.Out()
	if field(out, "leaks") == "" {
		tp.t.Fatalf("capture failed: %s %s", out, capture.Err())
	}
	return atoi(field(out, "leaks"), -1), replies, out
}

// TestSplitTunnelCrash: a split tunnel without the kill switch, and the
// client dies (kill -9). The TUN and its routes go with it, but the
// company's prefix stays refused (an unreachable route behind it in
// sallyport's table): a ping to the LAN host gets no answer and nothing
// for it leaves eth0 in the clear, also while a new client waits for the
// gateway (it adopts those routes). Connected, the new client has the
// prefix once through the TUN and once unreachable behind it; after
// another kill -9, `down` removes them and plain traffic flows again.
func TestSplitTunnelCrash(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	tp.plainInternet()
	if leaks, replies, out := tp.lanLeaks(1000); leaks == 0 || replies != 2 {
		t.Fatalf("before the tunnel: leaks=%d replies=%d, want plain traffic seen on eth0: %s", leaks, replies, out)
	}
	k := stdPKI(t)
	sock := shortTempDir(t)
	split := Policy{Name: "engineering", Match: map[string][]string{"ou": {"eng"}}, Allow: []string{lanNet}, Routes: []string{lanNet}}
	gw := tp.startGateway(defaultServerConf(k, "wireguard", sock, split))
	cc := clientConf(k, "alice", "wireguard", sock)
	lap := tp.startLaptop(tp.Lap, "alice", cc)
	lap.waitUp(15 * time.Second)
	wantRoutes := []string{lanNet + " dev sp0 table 21328", "unreachable " + lanNet + " table 21328 metric 21328"}
	if st, err := lap.installed(); err != nil || st.Installed.KillSwitch || !slices.Equal(st.Installed.Routes, wantRoutes) {
		t.Fatalf("split tunnel read-back %+v %v", st, err)
	}

	lap.Proc.Signal(syscall.SIGKILL)
	lap.Proc.Wait(5 * time.Second)
	if !waitFor(5*time.Second, func() bool { return !linkExists(tp.Lap, "sp0") }) {
		t.Fatal("TUN still there after kill -9")
	}
	if leaks, replies, out := tp.lanLeaks(1500); leaks != 0 || replies != 0 {
		t.Fatalf("after kill -9: leaks=%d replies=%d, want the LAN prefix refused: %s", leaks, replies, out)
	}

	// A new client while the gateway is away: it keeps them.
	if !gw.Proc.Stop(10 * time.Second) {
		t.Fatal("server did not stop on SIGTERM")
	}
	lap2 := tp.startLaptop(tp.Lap, "alice2", cc)
	if !waitFor(10*time.Second, func() bool {
		return strings.Contains(lap2.Proc.Err(), "kept the routes and rules an earlier client left")
	}) {
		t.Fatalf("the new client did not adopt the routes:\n%s", tail(lap2.Proc.Log(), 20))
	}
	if leaks, replies, out := tp.lanLeaks(1500); leaks != 0 || replies != 0 {
		t.Fatalf("new client, gateway down: leaks=%d replies=%d: %s", leaks, replies, out)
	}
	gw.Start()
	lap2.waitUp(20 * time.Second)
	if st, err := lap2.installed(); err != nil || !slices.Equal(st.Installed.Routes, wantRoutes) || len(st.Installed.Rules) != 1 {
		t.Fatalf("after the new client connected: %+v %v", st, err)
	}
	if got := tp.ping(tp.Lap, lanHost, 2); got != 2 {
		t.Fatalf("ping through the new client's tunnel: %d/2", got)
	}

	lap2.Proc.Signal(syscall.SIGKILL)
	lap2.Proc.Wait(5 * time.Second)
	waitFor(5*time.Second, func() bool { return !linkExists(tp.Lap, "sp0") })
	if out, err := tp.sp(tp.Lap, "down", "-c", lap2.Conf); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("down after kill -9: %v %s", err, out)
	}
	if out := run(t, "ip", "-n", tp.Lap, "route", "show", "table", "21328"); strings.TrimSpace(out) != "" {
		t.Fatalf("down left routes in table 21328:\n%s", out)
	}
	if leaks, replies, out := tp.lanLeaks(1000); leaks == 0 || replies != 2 {
		t.Fatalf("after down: leaks=%d replies=%d, want plain traffic back: %s", leaks, replies, out)
	}
}

// offlineLeaks is leakCheck with the IPv4 datagram to an address outside
// the pushed prefixes (the gateway's outer address, port 9999: not the
// client's own connection).
func (tp *Topo) offlineLeaks(ms int) (leaks, replies int, out string) {
	tp.t.Helper()
	leaks, _, replies, out = tp.probe(ms, gwAddr+":9999")
	return leaks, replies, out
}

// TestRememberedKillSwitch: the gateway's policy pushes kill_switch = true
// for a split tunnel; the laptop's file leaves it unset. After a clean
// down, the next up happens while the gateway is unreachable (a boot
// behind a captive portal): from the first second nothing leaves eth0 in
// the clear, IPv4 or IPv6, and the pushed prefix is refused, because the
// laptop remembers the last config. With kill_switch = false written in
// the file the gateway's pushed kill_switch = true still wins, before the
// first connection as while connected: nothing leaves in the clear, and
// the log says why. down restores plain traffic.
func TestRememberedKillSwitch(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	tp.plainInternet()
	k := stdPKI(t)
	sock := shortTempDir(t)
	on := true
	split := Policy{Name: "engineering", Match: map[string][]string{"ou": {"eng"}}, Allow: []string{lanNet}, Routes: []string{lanNet}, KillSwitch: &on}
	gw := tp.startGateway(defaultServerConf(k, "wireguard", sock, split))
	lap := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	lap.waitUp(15 * time.Second)
	down := func() {
		t.Helper()
		if out, err := tp.sp(tp.Lap, "down", "-c", lap.Conf); err != nil {
			t.Fatalf("down: %v %s", err, out)
		}
		if !lap.Proc.Wait(10 * time.Second) {
			t.Fatal("client still running after down")
		}
	}
	down()
	if leaks, replies, out := tp.offlineLeaks(1500); leaks == 0 || replies != 2 || !strings.Contains(out, "udp6:sent=1") {
		t.Fatalf("after down: leaks=%d replies=%d, want plain traffic seen on eth0: %s", leaks, replies, out)
	}
	if !gw.Proc.Stop(10 * time.Second) {
		t.Fatal("server did not stop on SIGTERM")
	}
	upOffline := func(name string, kill bool) {
		t.Helper()
		lap.Proc = tp.start(tp.Lap, name, nil, binPath, "up", "-c", lap.Conf)
		var st installedStatus
		if !waitFor(10*time.Second, func() bool {
			var err error
			st, err = lap.installed()
			return err == nil && len(st.Installed.Routes) > 0
		}) {
			t.Fatalf("%s: no status with routes: %+v\n%s", name, st, tail(lap.Proc.Log(), 20))
		}
		want := []string{"unreachable " + lanNet + " table 21328 metric 21328"}
		if st.Connected || st.Installed.KillSwitch != kill || !slices.Equal(st.Installed.Routes, want) {
			t.Fatalf("%s before any session: %+v, want kill switch %v and %v", name, st, kill, want)
		}
	}

	upOffline("client-alice-boot", true)
	if leaks, replies, out := tp.offlineLeaks(2000); leaks != 0 || replies != 0 || !strings.Contains(out, "udp6:send_error") {
		t.Fatalf("up with the gateway unreachable: leaks=%d replies=%d, want nothing in the clear: %s", leaks, replies, out)
	}
	down()

	b, err := os.ReadFile(lap.Conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lap.Conf, []byte(strings.Replace(string(b), "[tunnel]\n", "[tunnel]\nkill_switch = false\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	upOffline("client-alice-off", true)
	if leaks, replies, out := tp.offlineLeaks(1500); leaks != 0 || replies != 0 || !strings.Contains(out, "udp6:send_error") {
		t.Fatalf("kill_switch = false in the file, kill_switch = true pushed last time: leaks=%d replies=%d, want nothing in the clear: %s",
			leaks, replies, out)
	}
	if !strings.Contains(lap.Proc.Err(), "wins over kill_switch = false in the client file") {
		t.Fatalf("the log does not say why the kill switch is on:\n%s", tail(lap.Proc.Log(), 10))
	}
	down()
	if leaks, replies, out := tp.offlineLeaks(1000); leaks == 0 || replies != 2 {
		t.Fatalf("after the last down: leaks=%d replies=%d, want plain traffic: %s", leaks, replies, out)
	}
}
