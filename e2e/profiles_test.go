package e2e

import (
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestTwoProfiles: two client configs without a device (as `pki bundle`
// writes them) are up at once on one laptop: the kernel gives them sp0 and
// sp1, each has its own routing table, both connect and reach the LAN, and
// each `down` removes only its own.
func TestTwoProfiles(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t, false)
	k := stdPKI(t)
	sock := shortTempDir(t)
	tp.startGateway(defaultServerConf(k, "wireguard", sock, restrictive))
	var laps []*Laptop
	for _, name := range []string{"alice", "bob"} {
		cc := clientConf(k, name, "wireguard", sock)
		cc.Device = "" // as in a bundle: the client takes the first free spN
		l := tp.startLaptop(tp.Lap, name, cc)
		laps = append(laps, l)
		// waitUp looks for the LAN route on l.Dev; find the device first.
		var st ClientStatus
		if !waitFor(15*time.Second, func() bool { st, _ = l.Status(); return st.Connected }) {
			t.Fatalf("%s never connected:\n%s", name, tail(l.Proc.Log(), 20))
		}
	}
	for _, dev := range []string{"sp0", "sp1"} {
		if !linkExists(tp.Lap, dev) {
			out, _ := exec.Command("ip", "-n", tp.Lap, "link").CombinedOutput()
			t.Fatalf("no %s with two profiles up:\n%s", dev, out)
		}
	}
	out, _ := exec.Command("ip", "-n", tp.Lap, "rule").CombinedOutput()
	if !strings.Contains(string(out), "lookup 21328") || !strings.Contains(string(out), "lookup 21329") {
		t.Errorf("the two profiles do not have a routing table each:\n%s", out)
	}
	if got := tp.ping(tp.Lap, lanHost, 2); got != 2 {
		t.Errorf("ping the LAN with two profiles up: %d/2", got)
	}
	for i, l := range laps {
		if out, err := tp.sp(tp.Lap, "down", "--socket", l.Socket); err != nil {
			t.Fatalf("down %d: %v: %s", i, err, out)
		}
		l.Proc.Wait(10 * time.Second)
		if i == 0 {
			if st, err := laps[1].Status(); err != nil || !st.Connected {
				t.Fatalf("the second profile fell down with the first: %+v %v", st, err)
			}
		}
	}
	for _, dev := range []string{"sp0", "sp1"} {
		if bad := leftovers(tp.Lap, dev, true); len(bad) > 0 {
			t.Errorf("left behind: %v", bad)
		}
	}
}
