package e2e

import (
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
