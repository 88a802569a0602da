package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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

// TestOneBundleTwoProfiles: the same bundle installed as two profiles on
// one laptop. The second `up` stops before it dials, exit status 1, and
// says which profile and process has the device; the first keeps its
// session and the gateway never sees the two fight. After kill -9 of the
// first, the second comes up: a dead client's lock blocks nothing.
func TestOneBundleTwoProfiles(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	sock := shortTempDir(t)
	gw := tp.startGateway(defaultServerConf(k, "wireguard", sock, restrictive))
	cc := clientConf(k, "alice", "wireguard", sock)
	cc.Device = ""
	first := tp.startLaptop(tp.Lap, "acme", cc)
	if !waitFor(15*time.Second, func() bool { st, err := first.Status(); return err == nil && st.Connected }) {
		t.Fatalf("the first profile did not connect:\n%s", tail(first.Proc.Log(), 20))
	}
	copyConf := cc
	copyConf.Socket = filepath.Join(sock, "acme-copy.sock")
	second := tp.startLaptop(tp.Lap, "acme-copy", copyConf)
	if !second.Proc.Wait(10 * time.Second) {
		t.Fatalf("the second profile with the same bundle is still running:\n%s", tail(second.Proc.Log(), 20))
	}
	want := fmt.Sprintf("sallyport: device alice is already up on this laptop: profile acme (pid %d, since ", first.Proc.Cmd.Process.Pid)
	if code, errOut := second.Proc.ExitCode(), second.Proc.Err(); code != 1 || !strings.Contains(errOut, want) ||
		!strings.Contains(errOut, "sudo sallyport down -c "+first.Conf) {
		t.Fatalf("second profile: exit %d, stderr:\n%s\nwant it to contain %q", code, errOut, want)
	}
	if st, err := first.Status(); err != nil || !st.Connected {
		t.Fatalf("the first profile lost its tunnel: %+v %v", st, err)
	}
	if strings.Contains(gw.Proc.Err(), "duplicate-device") || strings.Count(gw.Proc.Err(), `msg="session up"`) != 1 {
		t.Fatalf("the gateway saw the second profile:\n%s", tail(gw.Proc.Err(), 10))
	}

	first.Proc.Signal(syscall.SIGKILL)
	first.Proc.Wait(5 * time.Second)
	second.Proc = tp.start(tp.Lap, "client-acme-copy-2", nil, binPath, "up", "-c", second.Conf)
	if !waitFor(15*time.Second, func() bool { st, err := second.Status(); return err == nil && st.Connected }) {
		t.Fatalf("after kill -9 of the first, the second did not come up:\n%s", tail(second.Proc.Log(), 20))
	}
	if out, err := tp.sp(tp.Lap, "down", "-c", second.Conf); err != nil {
		t.Fatalf("down: %v %s", err, out)
	}
}
