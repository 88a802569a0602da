package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestHarness checks the topology and the traffic helpers without the VPN:
// from the gateway namespace (which routes to the LAN directly) ping and TCP
// work, and a forged-source UDP packet does arrive — so when the same
// helpers see nothing through the tunnel, it is the VPN dropping it.
func TestHarness(t *testing.T) {
	requireNetns(t)
	t.Parallel()
	tp := newTopo(t, true)
	// The leftover check must not see the topology itself as a leftover.
	if bad := leftovers(tp.Lap, "sp0", true); len(bad) > 0 {
		t.Fatalf("fresh laptop reports leftovers: %q", bad)
	}
	if bad := leftovers(tp.GW, "sp0", false); len(bad) > 0 {
		t.Fatalf("fresh gateway reports leftovers: %q", bad)
	}
	if got := tp.ping(tp.GW, lanHost, 2); got != 2 {
		t.Fatalf("gateway -> LAN ping: %d/2", got)
	}
	if got := tp.ping(tp.Lap, lanHost, 1); got != 0 {
		t.Fatalf("laptop reaches the LAN without a tunnel (%d replies): topology leaks", got)
	}
	if got := tp.ping(tp.Lap2, gwAddr, 1); got != 1 {
		t.Fatalf("second laptop cannot reach the gateway listen address")
	}
	sink := tp.helper(tp.LAN, "tcpsink", lanHost+":5201")
	waitReady(t, sink)
	tp.transfer(tp.GW, lanHost+":5201", 1<<20)
	udp := tp.helper(tp.LAN, "udplisten", "0.0.0.0:9999")
	waitReady(t, udp)
	if out, _ := tp.helperRun(15*time.Second, tp.GW, "udpforge", "10.213.0.200", lanHost+":9999", "forged"); field(out, "error") != "" {
		t.Fatalf("udpforge: %s", out)
	}
	if !waitFor(2*time.Second, func() bool { return strings.Contains(udp.Out(), "from=10.213.0.200 payload=forged") }) {
		t.Fatalf("forged packet sent directly did not arrive: %q", udp.Out())
	}
	out, _ := tp.helperRun(15*time.Second, tp.Lap, "tcpsend", lanHost+":5201", "10", "500")
	if !strings.Contains(field(out, "error"), "unreachable") && !strings.Contains(field(out, "error"), "timeout") {
		t.Fatalf("laptop TCP to LAN without tunnel: %q", out)
	}
}
