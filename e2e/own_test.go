package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestGatewayOwnAddress (issue 17): a policy that allows the whole LAN
// does not open the gateway's own LAN address to devices: the metrics
// listener on a wildcard address (which the gateway and the laptop each
// warn about at start) is not reachable through the tunnel, nor is the
// gateway's tunnel address, while the LAN host is. A rule naming the
// gateway's address alone opens exactly that port, on a reload.
func TestGatewayOwnAddress(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	sock := shortTempDir(t)
	wide := Policy{Name: "engineering", Match: map[string][]string{"ou": {"eng"}}, Allow: []string{lanNet, poolNet}, Routes: []string{lanNet}}
	sc := defaultServerConf(k, "wireguard", sock, wide)
	sc.Extra = "[metrics]\nlisten = \"0.0.0.0:9580\"\n"
	gw := tp.startGateway(sc)
	if !strings.Contains(gw.Proc.Err(), "metrics.listen 0.0.0.0:9580 is a wildcard address") {
		t.Errorf("no warning about the wildcard metrics listener at start:\n%s", tail(gw.Proc.Err(), 20))
	}
	cc := clientConf(k, "alice", "wireguard", sock)
	cc.Extra += "[metrics]\nlisten = \"0.0.0.0:9581\"\n"
	alice := tp.startLaptop(tp.Lap, "alice", cc)
	alice.waitUp(15 * time.Second)
	if !waitFor(5*time.Second, func() bool { return strings.Contains(alice.Proc.Err(), "metrics.listen is a wildcard address") }) {
		t.Errorf("no warning about the laptop's wildcard metrics listener:\n%s", tail(alice.Proc.Err(), 20))
	}

	if got := tp.ping(tp.Lap, lanHost, 2); got != 2 {
		t.Fatalf("ping to the LAN host: %d/2", got)
	}
	if got := tp.ping(tp.Lap, gwLanAddr, 2); got != 0 {
		t.Errorf("ping to the gateway's LAN address %s under a LAN-wide rule: %d/2 answered", gwLanAddr, got)
	}
	gwTun := strings.TrimSuffix(poolNet, "0/24") + "1"
	if got := tp.ping(tp.Lap, gwTun, 2); got != 0 {
		t.Errorf("ping to the gateway's tunnel address %s under a pool-wide rule: %d/2 answered", gwTun, got)
	}
	metricsURL := "http://" + gwLanAddr + ":9580/metrics"
	if out, _ := tp.helperRun(15*time.Second, tp.Lap, "httpget", metricsURL); strings.HasPrefix(out, "status=") {
		t.Fatalf("the device fetched the gateway's metrics through the tunnel:\n%s", tail(out, 3))
	}
	if s, ok := gw.Session("alice"); !ok || s.Dropped.Policy < 4 {
		t.Errorf("policy drops %d, want the pings and the SYNs to the gateway counted", s.Dropped.Policy)
	}

	// A rule naming the gateway's address opens that port, nothing more.
	named := wide
	named.Allow = append(append([]string{}, wide.Allow...), gwLanAddr+" tcp/9580")
	sc.Policies = []Policy{named}
	render(t, serverTmpl, sc, gw.Conf)
	if !waitFor(5*time.Second, func() bool { return strings.Contains(gw.Proc.Err(), `msg="configuration reloaded"`) }) {
		t.Fatalf("gateway did not reload:\n%s", tail(gw.Proc.Log(), 20))
	}
	if out, _ := tp.helperRun(15*time.Second, tp.Lap, "httpget", metricsURL); !strings.HasPrefix(out, "status=200") {
		t.Fatalf("a rule naming %s tcp/9580 did not open the metrics: %s", gwLanAddr, tail(out, 3))
	}
	if got := tp.ping(tp.Lap, gwLanAddr, 1); got != 0 {
		t.Errorf("ping to the gateway after naming only tcp/9580: %d/1 answered", got)
	}
}

// TestDuplicateDevice (issue 17): with the real laptop connected (on the
// TLS stream, and on the datagram path), a copy of its bundle connecting
// five times 300 ms apart is refused with duplicate-device every time (the
// laptop answers the gateway's probe); the laptop keeps its session and
// its traffic; the gateway logs one warning naming both addresses and
// lists the device in server status.
func TestDuplicateDevice(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	for _, mode := range []string{"tls", "quic"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			tp := newTopo(t, false)
			k := stdPKI(t)
			sock := shortTempDir(t)
			gw := tp.startGateway(defaultServerConf(k, "wireguard", sock, restrictive))
			cc := clientConf(k, "alice", "wireguard", sock)
			cc.Transport = mode
			alice := tp.startLaptop(tp.Lap, "alice", cc)
			alice.waitUp(15 * time.Second)
			before, _ := gw.Session("alice")
			if before.Path != mode {
				t.Fatalf("the laptop came up on the %s path, want %s", before.Path, mode)
			}
			crt, key := k.Device("alice")
			hold := filepath.Join(t.TempDir(), "go") // present: no hold, the frames are read and named
			if err := os.WriteFile(hold, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				out, _ := tp.helperRun(15*time.Second, tp.Lap, "tlsdial", listen, gwName, k.CA(), crt, key, hold)
				if field(out, "close_reason") != "duplicate-device" {
					t.Fatalf("thief attempt %d: %s, want close reason duplicate-device", i+1, out)
				}
				time.Sleep(300 * time.Millisecond)
			}
			if after, ok := gw.Session("alice"); !ok || after.Since != before.Since {
				t.Fatalf("the laptop's session did not survive the burst (since %s -> %s, live %v)", before.Since, after.Since, ok)
			}
			if got := tp.ping(tp.Lap, lanHost, 2); got != 2 {
				t.Fatalf("the laptop's traffic after the burst: %d/2 pings", got)
			}
			if n := strings.Count(gw.Proc.Err(), "one device certificate is in use on two machines"); n != 1 {
				t.Errorf("%d duplicate warnings, want one:\n%s", n, tail(gw.Proc.Err(), 20))
			}
			out, err := exec.Command("ip", "netns", "exec", tp.GW, binPath, "server", "status", "--socket", gw.Socket).Output()
			if err != nil || !strings.Contains(string(out), "DUPLICATE: device alice") || !strings.Contains(string(out), "5 connection(s) refused") {
				t.Errorf("server status (%v) does not show the duplicate:\n%s", err, out)
			}
		})
	}
}

// TestGatewayOwnBroadcast (review of issue 17): a device whose policy
// allows everything still cannot reach the gateway's own sockets through
// the addresses Linux delivers to the host besides its unicast ones: the
// limited broadcast, the tunnel pool's and the LAN's broadcast addresses,
// multicast (224.0.0.1, ff02::1), and the IPv6 subnet-router anycast
// addresses of the pool and the LAN. A UDP service bound to the wildcard
// address on the gateway hears none of them, while the same datagram to
// the LAN host arrives. The device here is hostile: it routes multicast
// and broadcast into its tunnel itself.
func TestGatewayOwnBroadcast(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	tp.lanIPv6()
	k := stdPKI(t)
	sock := shortTempDir(t)
	all := Policy{Name: "engineering", Match: map[string][]string{"ou": {"eng"}}, Allow: []string{"0.0.0.0/0", "::/0"}, Routes: []string{lanNet, lanNet6}}
	sc := defaultServerConf(k, "wireguard", sock, all)
	sc.Pool6 = pool6Net
	gw := tp.startGateway(sc)
	alice := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	st := alice.waitUp(15 * time.Second)
	dev, dev6 := strings.Split(st.Address, "/")[0], strings.Split(st.Address6, "/")[0]
	for _, r := range []string{"224.0.0.0/4", "255.255.255.255/32"} {
		run(t, "ip", "-n", tp.Lap, "route", "add", r, "dev", alice.Dev)
	}
	gw4 := tp.helper(tp.GW, "udplisten", "0.0.0.0:9999")
	gw6 := tp.helper(tp.GW, "udplisten6", "[::]:9999")
	lan4 := tp.helper(tp.LAN, "udplisten", "0.0.0.0:9999")
	lan6 := tp.helper(tp.LAN, "udplisten6", "[::]:9999")
	for _, h := range []*Proc{gw4, gw6, lan4, lan6} {
		waitReady(t, h)
	}
	pool4 := strings.TrimSuffix(poolNet, "0/24")
	for _, dst := range []string{pool4 + "255", "255.255.255.255", "224.0.0.1", "198.19.77.255", "[ff02::1]", "[fd00:213::]", "[fd00:77::]"} {
		src := dev
		if strings.HasPrefix(dst, "[") {
			src = dev6
		}
		if out, _ := tp.helperRun(15*time.Second, tp.Lap, "udpforge", src, dst+":9999", "to-"+dst, alice.Dev); field(out, "sent") != "1" {
			t.Fatalf("udpforge to %s: %s", dst, out)
		}
	}
	for src, dst := range map[string]string{dev: lanHost + ":9999", dev6: "[" + lanHost6b + "]:9999"} {
		if out, _ := tp.helperRun(15*time.Second, tp.Lap, "udpforge", src, dst, "control"); field(out, "sent") != "1" {
			t.Fatalf("udpforge control to %s: %s", dst, out)
		}
	}
	if !waitFor(5*time.Second, func() bool {
		return strings.Contains(lan4.Out(), "payload=control") && strings.Contains(lan6.Out(), "payload=control")
	}) {
		t.Fatalf("the control datagrams did not reach the LAN host: %q %q", lan4.Out(), lan6.Out())
	}
	time.Sleep(time.Second) // the others were sent first; give them the same time
	if got := gw4.Out() + gw6.Out(); strings.Contains(got, "recv") {
		t.Errorf("the gateway's own wildcard sockets heard the device:\n%s", got)
	}
	if s, ok := gw.Session("alice"); !ok || s.Dropped.Policy < 7 {
		t.Errorf("policy drops %d, want the 7 datagrams to the gateway counted", s.Dropped.Policy)
	}
}
