package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

var drivers = []string{"wireguard", "water"}

// stdPKI makes a CA with the gateway cert and eng devices alice and bob.
func stdPKI(t *testing.T) *PKI {
	t.Helper()
	k := newPKI(t, "Test CA")
	k.ServerCert(gwName, "--ip", gwAddr)
	k.Issue("alice", []string{"eng"})
	k.Issue("bob", []string{"eng"})
	return k
}

// restrictive allows only tcp/5201, udp/9999 and icmp to the LAN.
var restrictive = Policy{
	Name:   "engineering",
	Match:  map[string][]string{"ou": {"eng"}},
	Allow:  []string{lanNet + " tcp/5201", lanNet + " udp/9999", lanNet + " icmp"},
	Routes: []string{lanNet},
}

// ping pings dst from ns through the helper (no ping binary needed) and
// returns how many of count echo requests were answered.
func (tp *Topo) ping(ns, dst string, count int) int {
	tp.t.Helper()
	out, _ := tp.helperRun(20*time.Second, ns, "ping", dst, fmt.Sprint(count), "1000")
	if e := field(out, "error"); e != "" {
		tp.t.Fatalf("ping helper: %s", out)
	}
	return atoi(field(out, "received"), -1)
}

// transfer sends n random bytes from ns to addr (a tcpsink) and asserts
// that the sink saw exactly the same bytes (sha256).
func (tp *Topo) transfer(ns, addr string, n int) {
	tp.t.Helper()
	start := time.Now()
	out, _ := tp.helperRun(60*time.Second, ns, "tcpsend", addr, fmt.Sprint(n), "5000")
	if field(out, "error") != "" {
		tp.t.Fatalf("TCP transfer %s -> %s failed: %s", ns, addr, out)
	}
	if got := field(out, "echo_bytes"); got != fmt.Sprint(n) {
		tp.t.Fatalf("sink received %s bytes, want %d: %s", got, n, out)
	}
	if s, e := field(out, "sha256"), field(out, "echo_sha256"); s == "" || s != e {
		tp.t.Fatalf("sha256 mismatch: sent %s, sink got %s", s, e)
	}
	tp.t.Logf("transferred %d bytes %s -> %s in %v, sha256 %s", n, ns, addr, time.Since(start).Round(time.Millisecond), field(out, "sha256")[:16])
}

// download fetches n bytes served from addr in the LAN namespace into ns
// and checks the checksum on both ends.
func (tp *Topo) download(ns, addr string, n int) {
	tp.t.Helper()
	src := tp.helper(tp.LAN, "tcpsource", addr, fmt.Sprint(n))
	waitReady(tp.t, src)
	start := time.Now()
	out, _ := tp.helperRun(60*time.Second, ns, "tcpfetch", addr, "5000")
	if field(out, "error") != "" || field(out, "fetched") != fmt.Sprint(n) {
		tp.t.Fatalf("download %s -> %s failed: %s", addr, ns, out)
	}
	var served string
	for i := 0; i < 50 && served == ""; i++ {
		served = field(src.Out(), "sha256")
		time.Sleep(20 * time.Millisecond)
	}
	if got := field(out, "sha256"); got == "" || got != served {
		tp.t.Fatalf("sha256 mismatch: LAN served %s, laptop fetched %s", served, got)
	}
	tp.t.Logf("downloaded %d bytes %s -> %s in %v, sha256 %s", n, addr, ns, time.Since(start).Round(time.Millisecond), served[:16])
}

// TestDataPlane covers issue 3 "Done when" 1-3 on both drivers: traffic
// through the tunnel, policy drops, anti-spoofing.
func TestDataPlane(t *testing.T) {
	requireRoot(t)
	for _, drv := range drivers {
		t.Run(drv, func(t *testing.T) {
			t.Parallel()
			tp := newTopo(t, false)
			k := stdPKI(t)
			sock := shortTempDir(t)
			gw := tp.startGateway(defaultServerConf(k, drv, sock, restrictive))
			lap := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", drv, sock))
			st := lap.waitUp(15 * time.Second)
			devAddr, err := netip.ParsePrefix(st.Address)
			if err != nil {
				t.Fatalf("client status address %q: %v", st.Address, err)
			}
			if !netip.MustParsePrefix(poolNet).Contains(devAddr.Addr()) {
				t.Fatalf("device address %v not in pool %s", devAddr, poolNet)
			}
			// The wireguard driver passes TCP super-packets whole (CapGSO), so
			// the checksummed transfer below covers that path; water does not.
			wantGSO := fmt.Sprintf("gso=%v", drv == "wireguard")
			if line := sessionUpRe.FindString(gw.Proc.Err()); !strings.Contains(line, wantGSO) {
				t.Fatalf("session up line %q, want %s", line, wantGSO)
			}

			t.Run("ping_and_tcp", func(t *testing.T) {
				tp := tp.with(t)
				if got := tp.ping(tp.Lap, lanHost, 3); got != 3 {
					t.Fatalf("ping %s through tunnel: %d/3 replies", lanHost, got)
				}
				sink := tp.helper(tp.LAN, "tcpsink", lanHost+":5201")
				waitReady(t, sink)
				const n = 4 << 20
				tp.transfer(tp.Lap, lanHost+":5201", n)
				s, ok := gw.Session("alice")
				if !ok {
					t.Fatal("no alice session in server status after transfer")
				}
				if s.BytesIn < n {
					t.Errorf("server counted bytes_in=%d, want >= %d (traffic must go through the tunnel)", s.BytesIn, n)
				}
				if s.Address != "" && !strings.HasPrefix(s.Address, devAddr.Addr().String()) {
					t.Errorf("server session address %q, client has %v", s.Address, devAddr)
				}
			})

			t.Run("download", func(t *testing.T) {
				tp.with(t).download(tp.Lap, lanHost+":5201", 4<<20)
			})

			t.Run("policy_drop", func(t *testing.T) {
				tp := tp.with(t)
				before, _ := gw.Session("alice")
				sink := tp.helper(tp.LAN, "tcpsink", lanHost+":5202")
				udp := tp.helper(tp.LAN, "udplisten", "0.0.0.0:5353")
				waitReady(t, sink)
				waitReady(t, udp)
				out, _ := tp.helperRun(15*time.Second, tp.Lap, "tcpsend", lanHost+":5202", "1000", "2000")
				if e := field(out, "error"); e == "" || !strings.Contains(e, "timeout") {
					t.Errorf("tcp/5202 is outside policy: want a dial timeout (no answer), got %q", out)
				}
				if out, _ := tp.helperRun(15*time.Second, tp.Lap, "udpsend", lanHost+":5353", "policy-probe"); field(out, "error") != "" {
					t.Fatalf("udpsend: %s", out)
				}
				time.Sleep(1500 * time.Millisecond)
				if strings.Contains(sink.Out(), "from=") {
					t.Errorf("LAN host accepted a tcp/5202 connection outside policy: %s", sink.Out())
				}
				if strings.Contains(udp.Out(), "recv") {
					t.Errorf("LAN host received udp/5353 outside policy: %s", udp.Out())
				}
				after, ok := gw.Session("alice")
				if !ok {
					t.Fatal("alice session gone")
				}
				if after.Dropped.Policy <= before.Dropped.Policy {
					t.Errorf("dropped.policy did not grow: before %d after %d", before.Dropped.Policy, after.Dropped.Policy)
				}
				t.Logf("dropped.policy %d -> %d", before.Dropped.Policy, after.Dropped.Policy)
			})

			t.Run("no_inbound", func(t *testing.T) {
				// Conntrack: the LAN host may answer the laptop's flows but
				// cannot open one to the laptop.
				tp := tp.with(t)
				before, _ := gw.Session("alice")
				sink := tp.helper(tp.Lap, "tcpsink", "0.0.0.0:5301")
				waitReady(t, sink)
				out, _ := tp.helperRun(15*time.Second, tp.LAN, "tcpsend", devAddr.Addr().String()+":5301", "1000", "2000")
				if e := field(out, "error"); e == "" || !strings.Contains(e, "timeout") {
					t.Errorf("LAN -> laptop tcp/5301 (no flow opened by the laptop): want a dial timeout, got %q", out)
				}
				if strings.Contains(sink.Out(), "from=") {
					t.Errorf("laptop accepted a connection opened from the LAN: %s", sink.Out())
				}
				after, ok := gw.Session("alice")
				if !ok {
					t.Fatal("alice session gone")
				}
				if after.Dropped.NoFlow <= before.Dropped.NoFlow {
					t.Errorf("dropped.no_flow did not grow: %d -> %d", before.Dropped.NoFlow, after.Dropped.NoFlow)
				}
			})

			t.Run("anti_spoof", func(t *testing.T) {
				tp := tp.with(t)
				before, _ := gw.Session("alice")
				udp := tp.helper(tp.LAN, "udplisten", "0.0.0.0:9999")
				waitReady(t, udp)
				for _, src := range []string{"10.213.0.200", "198.19.77.50"} {
					if out, _ := tp.helperRun(15*time.Second, tp.Lap, "udpforge", src, lanHost+":9999", "forged-"+src); field(out, "error") != "" {
						t.Fatalf("udpforge: %s", out)
					}
				}
				if out, _ := tp.helperRun(15*time.Second, tp.Lap, "udpforge", devAddr.Addr().String(), lanHost+":9999", "control"); field(out, "error") != "" {
					t.Fatalf("udpforge control: %s", out)
				}
				if !waitFor(5*time.Second, func() bool { return strings.Contains(udp.Out(), "payload=control") }) {
					t.Fatalf("control packet with the device's own source %v never arrived: %q", devAddr.Addr(), udp.Out())
				}
				time.Sleep(1500 * time.Millisecond)
				if strings.Contains(udp.Out(), "forged") {
					t.Errorf("forged-source packet reached the LAN host: %s", udp.Out())
				}
				after, ok := gw.Session("alice")
				if !ok {
					t.Fatal("alice session gone")
				}
				if after.Dropped.Spoofed < before.Dropped.Spoofed+2 {
					t.Errorf("dropped.spoofed %d -> %d, want +2", before.Dropped.Spoofed, after.Dropped.Spoofed)
				}
			})
		})
	}
}

// with returns a view of the topology for subtest t: its failures, temp
// files and processes belong to t, and its processes stop when t ends.
func (tp *Topo) with(t *testing.T) *Topo {
	v := &Topo{t: t, Lap: tp.Lap, Lap2: tp.Lap2, GW: tp.GW, LAN: tp.LAN, home: tp.home}
	_ = t.TempDir() // removed after stopAll has read the output (see newTopo)
	t.Cleanup(v.stopAll)
	return v
}

var refusedRe = regexp.MustCompile(`msg="handshake refused".*`)

var sessionUpRe = regexp.MustCompile(`msg="session up".*`)

// refusals returns the "handshake refused" lines of a server log.
func refusals(log string) []string { return refusedRe.FindAllString(log, -1) }

func hasKV(line, key, val string) bool {
	return strings.Contains(line, " "+key+"="+val+" ") || strings.HasSuffix(line, " "+key+"="+val) ||
		strings.Contains(line, " "+key+"=\""+val+"\"")
}

// TestRefusals covers "Done when" 4: each bad credential is refused at the
// handshake with its logged reason and never gets a tunnel.
func TestRefusals(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	k.Issue("carol", []string{"eng"})
	k.Revoke("carol")
	k.Issue("old", []string{"eng"}, "--not-before", "2020-01-01T00:00:00Z", "--not-after", "2020-01-02T00:00:00Z")
	k.ServerCert("laptop-x")
	k.Issue("nopol", []string{"sales"})
	other := newPKI(t, "Other CA")
	other.Issue("mallory", []string{"eng"})

	sock := shortTempDir(t)
	gw := tp.startGateway(defaultServerConf(k, "wireguard", sock))

	type tc struct {
		name, reason, cert, key, device string
	}
	dev := func(k *PKI, n string) (string, string) { return k.Device(n) }
	cases := []tc{
		{name: "other-ca", reason: "unknown-ca"},
		{name: "revoked", reason: "revoked"},
		{name: "expired", reason: "expired"},
		{name: "server-eku", reason: "bad-eku"},
		{name: "no-cert", reason: "no-cert"},
		{name: "no-policy", reason: "no-policy"},
	}
	cases[0].cert, cases[0].key = dev(other, "mallory")
	cases[0].device = "mallory"
	cases[1].cert, cases[1].key = dev(k, "carol")
	cases[1].device = "carol"
	cases[2].cert, cases[2].key = dev(k, "old")
	cases[2].device = "old"
	cases[3].cert, cases[3].key = k.Server("laptop-x")
	cases[3].device = "laptop-x"
	cases[5].cert, cases[5].key = dev(k, "nopol")
	cases[5].device = "nopol"

	// Control: a good device does get a config over the same hand-made dial.
	crt, key := k.Device("alice")
	if out, _ := tp.helperRun(15*time.Second, tp.Lap, "tlsdial", listen, gwName, k.CA(), crt, key); field(out, "result") != "config" {
		t.Fatalf("control: alice's hand-made handshake got no config: %s", out)
	}

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tp := tp.with(t)
			n0 := len(refusals(gw.Proc.Err()))
			out, _ := tp.helperRun(15*time.Second, tp.Lap, "tlsdial", listen, gwName, k.CA(), c.cert, c.key)
			if r := field(out, "result"); r != "refused" {
				t.Errorf("%s: gateway did not refuse: %s", c.name, out)
			}
			var line string
			waitFor(3*time.Second, func() bool {
				for _, l := range refusals(gw.Proc.Err())[n0:] {
					if hasKV(l, "reason", c.reason) {
						line = l
						return true
					}
				}
				return false
			})
			if line == "" {
				t.Fatalf("no log line msg=\"handshake refused\" reason=%s; new refusal lines: %q", c.reason, refusals(gw.Proc.Err())[n0:])
			}
			if c.device != "" && !hasKV(line, "device", c.device) {
				t.Errorf("refusal line does not name device=%s: %s", c.device, line)
			}
			t.Logf("logged: %s", line)
		})
	}

	// The real client with each certificate never gets a tunnel. They run
	// side by side, each with its own TUN name and admin socket.
	var laps []*Laptop
	nClient := len(refusals(gw.Proc.Err()))
	for i, c := range cases {
		if c.cert == "" {
			continue // the client refuses a config without a certificate
		}
		cc := clientConf(k, "alice", "wireguard", sock)
		cc.Cert, cc.Key = c.cert, c.key
		if c.name == "other-ca" {
			cc.CA = k.CA() // trusts the right gateway, presents the wrong cert
		}
		cc.Device = fmt.Sprintf("spr%d", i)
		cc.Socket = fmt.Sprintf("%s/ref%d.sock", sock, i)
		l := tp.startLaptop(tp.Lap, "refused-"+c.name, cc)
		if c.name == "expired" {
			// The laptop refuses its own expired certificate at once, with
			// its dates, and never dials (TestLaptopStartErrors has the line).
			if !l.Proc.Wait(10*time.Second) || l.Proc.ExitCode() != 1 || !strings.Contains(l.Proc.Err(), "expired on") {
				t.Errorf("real client with an expired certificate: exit %d, want 1 at once naming the dates:\n%s", l.Proc.ExitCode(), tail(l.Proc.Log(), 5))
			}
			continue
		}
		laps = append(laps, l)
	}
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range laps {
			if n := countRoute(routesOn(l.NS, l.Dev), lanNet); n > 0 {
				t.Errorf("%s: refused client got a route to the LAN", l.Proc.Name)
			}
			if st, err := l.Status(); err == nil && st.Connected {
				t.Errorf("%s: refused client reports connected: %+v", l.Proc.Name, st)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	out, _ := tryRun("ip", "-n", tp.Lap, "-4", "addr", "show")
	if strings.Contains(out, "10.213.0.") {
		t.Errorf("a refused client got a tunnel address:\n%s", out)
	}
	if st, err := gw.Status(); err != nil {
		t.Fatal(err)
	} else if len(st.Sessions) != 0 {
		t.Errorf("gateway has sessions for refused devices: %+v", st.Sessions)
	} else if os.Getenv("GOMAXPROCS") == "" && st.CPUs != 1 {
		// tunnel.cpus = 0: one P per live session, and at least one.
		t.Errorf("gateway without sessions runs on %d Ps, want 1", st.CPUs)
	}
	for _, l := range laps {
		l.Proc.Stop(3 * time.Second)
	}
	// With the real client too, the admin sees who was refused and why.
	for _, c := range cases {
		if c.cert == "" || c.name == "expired" {
			continue
		}
		found := false
		for _, l := range refusals(gw.Proc.Err())[nClient:] {
			found = found || (hasKV(l, "reason", c.reason) && hasKV(l, "device", c.device))
		}
		if !found {
			t.Errorf("real client with the %s cert: no refusal logged with reason=%s device=%s", c.name, c.reason, c.device)
		}
	}
	// And the good device still connects with the real client.
	lap := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	lap.waitUp(15 * time.Second)
}

// TestRevokeLive covers "Done when" 5: revoking a connected device cuts it
// off within 2 s; another device stays connected and passes traffic.
func TestRevokeLive(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, true)
	k := stdPKI(t)
	sock := shortTempDir(t)
	gw := tp.startGateway(defaultServerConf(k, "wireguard", sock))
	alice := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	bob := tp.startLaptop(tp.Lap2, "bob", clientConf(k, "bob", "wireguard", sock))
	alice.waitUp(15 * time.Second)
	bob.waitUp(15 * time.Second)
	sink := tp.helper(tp.LAN, "tcpsink", lanHost+":5201")
	waitReady(t, sink)
	if got := tp.ping(tp.Lap, lanHost, 2); got != 2 {
		t.Fatalf("alice ping before revoke: %d/2", got)
	}
	tp.transfer(tp.Lap2, lanHost+":5201", 1<<20)
	bobBefore, ok := gw.Session("bob")
	if !ok {
		t.Fatal("no bob session")
	}

	start := time.Now()
	k.Revoke("alice")
	gone := waitFor(5*time.Second, func() bool { _, ok := gw.Session("alice"); return !ok })
	took := time.Since(start)
	if !gone {
		t.Fatalf("alice's session still present 5 s after revocation")
	}
	if took > 2*time.Second {
		t.Errorf("alice disconnected after %v, want within 2 s", took)
	}
	t.Logf("revoked session gone after %v", took.Round(time.Millisecond))
	if !waitFor(2*time.Second, func() bool {
		for _, l := range regexp.MustCompile(`msg="session closed".*`).FindAllString(gw.Proc.Err(), -1) {
			if hasKV(l, "device", "alice") && hasKV(l, "reason", "revoked") {
				return true
			}
		}
		return false
	}) {
		t.Errorf("no msg=\"session closed\" device=alice reason=revoked in server log")
	}

	// Bob keeps his session (same start time) and keeps passing traffic.
	bobAfter, ok := gw.Session("bob")
	if !ok {
		t.Fatal("bob's session disappeared when alice was revoked")
	}
	if bobAfter.Since != bobBefore.Since {
		t.Errorf("bob's session was replaced (since %s -> %s)", bobBefore.Since, bobAfter.Since)
	}
	if got := tp.ping(tp.Lap2, lanHost, 2); got != 2 {
		t.Errorf("bob ping after revoke: %d/2", got)
	}
	tp.transfer(tp.Lap2, lanHost+":5201", 1<<20)

	// Alice stays out: her client's reconnects are refused as revoked.
	time.Sleep(2 * time.Second)
	if _, ok := gw.Session("alice"); ok {
		t.Errorf("revoked alice got a session again")
	}
	if got := tp.ping(tp.Lap, lanHost, 1); got != 0 {
		t.Errorf("revoked alice can still reach the LAN")
	}
	found := false
	for _, l := range refusals(gw.Proc.Err()) {
		found = found || (hasKV(l, "reason", "revoked") && hasKV(l, "device", "alice"))
	}
	if !found {
		t.Logf("note: no refused reconnect of alice logged yet (client may be backing off)")
	}
}

// TestGatewayRestart covers "Done when" 6: the laptop reconnects by itself
// after a gateway restart, traffic flows again, routes are not duplicated.
func TestGatewayRestart(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	sock := shortTempDir(t)
	gw := tp.startGateway(defaultServerConf(k, "wireguard", sock))
	lap := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	lap.waitUp(15 * time.Second)
	if got := tp.ping(tp.Lap, lanHost, 2); got != 2 {
		t.Fatalf("ping before restart: %d/2", got)
	}
	before, _ := gw.Session("alice")

	for round := 1; round <= 2; round++ {
		if !gw.Proc.Stop(10 * time.Second) {
			t.Fatalf("server did not exit within 10 s of SIGTERM")
		}
		if code := gw.Proc.ExitCode(); code != 0 {
			t.Errorf("server exit code %d after SIGTERM", code)
		}
		// Client notices (told by the gateway or by EOF).
		waitFor(5*time.Second, func() bool { st, err := lap.Status(); return err == nil && !st.Connected })
		time.Sleep(500 * time.Millisecond)
		gw.Start()
		start := time.Now()
		if !waitFor(20*time.Second, func() bool { _, ok := gw.Session("alice"); return ok }) {
			t.Fatalf("round %d: laptop did not reconnect within 20 s", round)
		}
		lap.waitUp(10 * time.Second)
		t.Logf("round %d: reconnected %v after restart", round, time.Since(start).Round(time.Millisecond))
		if lap.Proc.Exited() {
			t.Fatalf("client exited during restart: %s", tail(lap.Proc.Log(), 20))
		}
		if !waitFor(5*time.Second, func() bool { return tp.ping(tp.Lap, lanHost, 1) == 1 }) {
			t.Fatalf("round %d: no traffic after reconnect", round)
		}
		routes := routesOn(tp.Lap, "sp0")
		if n := countRoute(routes, lanNet); n != 1 {
			t.Errorf("round %d: route %s on sp0 appears %d times, want 1:\n%s", round, lanNet, n, strings.Join(routes, "\n"))
		}
		seen := map[string]int{}
		for _, l := range routes {
			seen[strings.Fields(l)[0]]++
		}
		for dst, n := range seen {
			if n > 1 {
				t.Errorf("round %d: duplicate route %s (%d times)", round, dst, n)
			}
		}
		// Once through the TUN, once unreachable behind it (for a crash).
		all, _ := tryRun("ip", "-n", tp.Lap, "-4", "route", "show", "table", "all")
		if c, u := strings.Count(all, lanNet+" "), strings.Count(all, "unreachable "+lanNet+" "); c != 2 || u != 1 {
			t.Errorf("round %d: %s appears %d times (%d unreachable) across all tables, want 2 (1):\n%s", round, lanNet, c, u, all)
		}
	}
	if after, ok := gw.Session("alice"); ok && before.Address != "" && after.Address != before.Address {
		t.Logf("note: address changed across gateway restart (%s -> %s); allowed since the pool is per run", before.Address, after.Address)
	}
	sink := tp.helper(tp.LAN, "tcpsink", lanHost+":5201")
	waitReady(t, sink)
	tp.transfer(tp.Lap, lanHost+":5201", 1<<20)
}

// TestCleanExit covers "Done when" 7 on both drivers: `sallyport down` and
// SIGTERM leave nothing behind on the laptop; SIGTERM of the server leaves
// no TUN on the gateway.
func TestCleanExit(t *testing.T) {
	requireRoot(t)
	for _, drv := range drivers {
		t.Run(drv, func(t *testing.T) {
			t.Parallel()
			tp := newTopo(t, false)
			k := stdPKI(t)
			sock := shortTempDir(t)
			gw := tp.startGateway(defaultServerConf(k, drv, sock))

			t.Run("down", func(t *testing.T) {
				tp := tp.with(t)
				lap := tp.startLaptop(tp.Lap, "alice-down", clientConf(k, "alice", drv, sock))
				lap.waitUp(15 * time.Second)
				out, err := tp.sp(tp.Lap, "down", "--socket", lap.Socket)
				if err != nil {
					t.Fatalf("sallyport down: %v\n%s", err, out)
				}
				if !lap.Proc.Wait(10 * time.Second) {
					t.Fatalf("client still running 10 s after `sallyport down`")
				}
				if code := lap.Proc.ExitCode(); code != 0 {
					t.Errorf("client exit code %d after down", code)
				}
				if bad := leftovers(tp.Lap, "sp0", true); len(bad) > 0 {
					t.Errorf("left behind after down:\n%s", strings.Join(bad, "\n"))
				}
			})

			t.Run("sigterm_client", func(t *testing.T) {
				tp := tp.with(t)
				lap := tp.startLaptop(tp.Lap, "alice-term", clientConf(k, "alice", drv, sock))
				lap.waitUp(15 * time.Second)
				lap.Proc.Signal(syscall.SIGTERM)
				if !lap.Proc.Wait(10 * time.Second) {
					t.Fatalf("client still running 10 s after SIGTERM")
				}
				if code := lap.Proc.ExitCode(); code != 0 {
					t.Errorf("client exit code %d after SIGTERM", code)
				}
				if bad := leftovers(tp.Lap, "sp0", true); len(bad) > 0 {
					t.Errorf("left behind after SIGTERM:\n%s", strings.Join(bad, "\n"))
				}
			})

			t.Run("sigterm_server", func(t *testing.T) {
				if !linkExists(tp.GW, "sp0") {
					t.Fatalf("gateway has no sp0 while running")
				}
				if !gw.Proc.Stop(10 * time.Second) {
					t.Fatalf("server still running 10 s after SIGTERM")
				}
				if code := gw.Proc.ExitCode(); code != 0 {
					t.Errorf("server exit code %d after SIGTERM", code)
				}
				if bad := leftovers(tp.GW, "sp0", false); len(bad) > 0 {
					t.Errorf("left behind on gateway after SIGTERM:\n%s", strings.Join(bad, "\n"))
				}
			})
		})
	}
}

// TestMixedDrivers runs a gateway whose TUN passes super-packets whole
// (wireguard driver) with a laptop on the water driver, which cannot: the
// session must not negotiate GSO, and the gateway cuts LAN super-packets
// into MTU-sized segments with complete checksums (tunnel.Segment) itself.
// Checksummed transfers both ways prove the segments are right.
func TestMixedDrivers(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	sock := shortTempDir(t)
	gw := tp.startGateway(defaultServerConf(k, "wireguard", sock))
	lap := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "water", sock))
	lap.waitUp(15 * time.Second)
	if line := sessionUpRe.FindString(gw.Proc.Err()); !strings.Contains(line, "gso=false") {
		t.Fatalf("session up line %q, want gso=false with a water laptop", line)
	}
	if !strings.Contains(gw.Proc.Err(), `msg="gateway up"`) || !strings.Contains(gw.Proc.Err(), "gso=true") {
		t.Fatalf("gateway did not start in GSO mode:\n%s", gw.Proc.Err())
	}
	tp.download(tp.Lap, lanHost+":5201", 4<<20)
	sink := tp.helper(tp.LAN, "tcpsink", lanHost+":5202")
	waitReady(t, sink)
	tp.transfer(tp.Lap, lanHost+":5202", 4<<20)
}
