package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testenv"
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

// TestProfilesByName: the wg-quick habits on a laptop. A bundle installed
// as <profiles>/acme.toml comes up with `sallyport up acme`; `status`
// shows every profile that is up and `status acme` that one; SIGHUP (what
// `systemctl reload` sends) re-reads the file, applies what can change
// live and names what needs a restart; `down acme` takes it down; then
// status and down say nothing is up and exit 0, and `status acme` exits 3.
func TestProfilesByName(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	tp.startGateway(defaultServerConf(k, "wireguard", shortTempDir(t)))
	etc := filepath.Join(tp.home[tp.Lap], "etc")
	prof := filepath.Join(etc, "acme.toml")
	k.pki("bundle", "--device", "alice", "--server", listen, "--server-name", gwName, "-o", prof)
	appendFile(t, prof, "\n[reconnect]\nmin_delay = \"200ms\"\nmax_delay = \"2s\"\n")

	lap := tp.start(tp.Lap, "client-acme", nil, binPath, "up", "acme")
	sp := func(args ...string) (string, int) {
		out, err := tp.sp(tp.Lap, args...)
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("sallyport %v: %v", args, err)
		}
		return out, code
	}
	if !waitFor(15*time.Second, func() bool {
		out, code := sp("status", "acme", "--json")
		return code == 0 && strings.Contains(out, `"connected": true`)
	}) {
		t.Fatalf("`sallyport up acme` never connected:\n%s", tail(lap.Log(), 20))
	}
	out, code := sp("status")
	if code != 0 || !strings.Contains(squeeze(out), "profile: acme ("+prof+")") || !strings.Contains(squeeze(out), "state: connected") {
		t.Errorf("status: exit %d\n%s", code, out)
	}
	asUser(t, tp, filepath.Dir(etc))

	// SIGHUP: a new delay applies, a new driver needs a restart.
	b, err := os.ReadFile(prof)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(strings.Replace(string(b), `max_delay = "2s"`, `max_delay = "3s"`, 1), `driver = "wireguard"`, `driver = "water"`, 1)
	if err := os.WriteFile(prof, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	lap.Signal(syscall.SIGHUP)
	if !waitFor(5*time.Second, func() bool { return strings.Contains(lap.Err(), `msg="configuration reloaded"`) }) {
		t.Fatalf("no reload after SIGHUP:\n%s", tail(lap.Err(), 10))
	}
	for _, want := range []string{"trigger=SIGHUP applied=reconnect.max_delay", "apply only when the client restarts", "keys=tunnel.driver"} {
		if !strings.Contains(lap.Err(), want) {
			t.Errorf("the reload log lacks %q:\n%s", want, tail(lap.Err(), 5))
		}
	}
	if out, code := sp("status", "acme", "--json"); code != 0 || !strings.Contains(out, `"connected": true`) || lap.Exited() {
		t.Errorf("the tunnel did not stay up across the reload: exit %d\n%s", code, out)
	}

	if out, code := sp("down", "acme"); code != 0 || out != "acme: tunnel down\n" {
		t.Errorf("down acme: exit %d, %q", code, out)
	}
	if !lap.Wait(10*time.Second) || lap.ExitCode() != 0 {
		t.Fatalf("client did not exit 0 after down:\n%s", tail(lap.Log(), 10))
	}
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"status"}, 0, "no tunnel is up (start one with: sudo sallyport up NAME; profiles: acme)\n"},
		{[]string{"status", "acme"}, 3, "acme: not up\n"},
		{[]string{"down"}, 0, "no tunnel is up\n"},
		{[]string{"down", "acme"}, 0, "acme: not up\n"},
	} {
		if out, code := sp(tt.args...); code != tt.code || out != tt.want {
			t.Errorf("sallyport %v with nothing up: exit %d, %q; want %d, %q", tt.args, code, out, tt.code, tt.want)
		}
	}
	if bad := leftovers(tp.Lap, "sp0", true); len(bad) > 0 {
		t.Errorf("left behind: %v", bad)
	}
}

func appendFile(t *testing.T, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

// squeeze collapses the runs of spaces of each line (tabwriter columns).
func squeeze(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}

// TestDownCrashedProfileSparesOthers: profile alice is killed on sp0, and
// profile bob (another device) comes up and gets sp0. `down alice` finds
// alice not running, but what is on sp0 (table, kill switch, DNS) is
// bob's now: it must stay, or bob's traffic leaves in the clear. Nothing
// leaks on eth0 before and after that down; bob keeps his kill switch and
// routes; after bob's own down the laptop is clean.
func TestDownCrashedProfileSparesOthers(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp, connect := profilesWithKillSwitch(t)
	alice := connect("alice")
	alice.Proc.Signal(syscall.SIGKILL)
	alice.Proc.Wait(5 * time.Second)
	if !waitFor(5*time.Second, func() bool { return !linkExists(tp.Lap, "sp0") }) {
		t.Fatal("sp0 still there after kill -9")
	}
	bob := connect("bob")
	if !linkExists(tp.Lap, "sp0") {
		t.Fatal("bob did not get sp0")
	}
	check := func(when string) {
		t.Helper()
		st, err := bob.installed()
		if err != nil || !st.Connected || !st.Installed.KillSwitch || len(st.Installed.Routes) != 2 || len(st.Installed.Rules) != 1 {
			t.Fatalf("%s: bob's tunnel %+v %v", when, st, err)
		}
		if leaks, replies, out := tp.offlineLeaks(1000); leaks != 0 || replies != 2 {
			t.Fatalf("%s: leaks=%d replies=%d, want nothing in the clear and the LAN through bob's tunnel: %s", when, leaks, replies, out)
		}
	}
	check("before down alice")
	out, err := tp.sp(tp.Lap, "down", "-c", alice.Conf)
	if err != nil || !strings.Contains(out, "alice: not up") || strings.Contains(out, "removed") {
		t.Fatalf("down alice: %v\n%s", err, out)
	}
	check("after down alice")
	if out, err := tp.sp(tp.Lap, "down", "-c", bob.Conf); err != nil {
		t.Fatalf("down bob: %v %s", err, out)
	}
	bob.Proc.Wait(10 * time.Second)
	if out, err := tp.sp(tp.Lap, "down", "-c", alice.Conf); err != nil {
		t.Fatalf("down alice again: %v %s", err, out)
	}
	if bad := leftovers(tp.Lap, "sp0", true); len(bad) > 0 {
		t.Errorf("left behind: %v", bad)
	}
}

// TestUpAfterCrashOnAnotherDevice: alice's profile crashes on sp1 (carol's
// had sp0) with a pushed kill switch; carol goes down; alice's next up gets
// sp0. sp1's kill switch (it lets out only what leaves through sp1 or
// carries sp1's mark) and table would block the new tunnel, its
// connection to the gateway included: up takes them over. alice connects,
// reaches the LAN through sp0, and nothing of sp1 is left.
func TestUpAfterCrashOnAnotherDevice(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp, connect := profilesWithKillSwitch(t)
	carol := connect("carol")
	alice := connect("alice")
	if !linkExists(tp.Lap, "sp1") {
		t.Fatal("alice did not get sp1")
	}
	alice.Proc.Signal(syscall.SIGKILL)
	alice.Proc.Wait(5 * time.Second)
	if out, err := tp.sp(tp.Lap, "down", "-c", carol.Conf); err != nil {
		t.Fatalf("down carol: %v %s", err, out)
	}
	carol.Proc.Wait(10 * time.Second)
	if linkExists(tp.Lap, "sp0") || linkExists(tp.Lap, "sp1") {
		t.Fatal("a TUN is still there")
	}
	alice.Proc = tp.start(tp.Lap, "client-alice-2", nil, binPath, "up", "-c", alice.Conf)
	if !waitFor(15*time.Second, func() bool { st, err := alice.Status(); return err == nil && st.Connected }) {
		t.Fatalf("alice did not connect again on sp0:\n%s", tail(alice.Proc.Log(), 20))
	}
	if !linkExists(tp.Lap, "sp0") || !strings.Contains(alice.Proc.Err(), "took over what a crashed run of this profile left") {
		t.Fatalf("alice is not on sp0 or did not take over sp1's leftovers:\n%s", tail(alice.Proc.Log(), 20))
	}
	if got := tp.ping(tp.Lap, lanHost, 2); got != 2 {
		t.Fatalf("ping the LAN through sp0: %d/2", got)
	}
	if out := run(t, "ip", "-n", tp.Lap, "rule"); strings.Contains(out, "lookup 21329") {
		t.Fatalf("sp1's rules are still there:\n%s", out)
	}
	if out, err := tp.sp(tp.Lap, "down", "-c", alice.Conf); err != nil {
		t.Fatalf("down alice: %v %s", err, out)
	}
	alice.Proc.Wait(10 * time.Second)
	for _, dev := range []string{"sp0", "sp1"} {
		if bad := leftovers(tp.Lap, dev, true); len(bad) > 0 {
			t.Errorf("left behind: %v", bad)
		}
	}
	// No kill switch of either device is left: plain traffic flows.
	if leaks, replies, out := tp.lanLeaks(1000); leaks == 0 || replies != 2 {
		t.Fatalf("after the last down: leaks=%d replies=%d, want plain traffic: %s", leaks, replies, out)
	}
}

// profilesWithKillSwitch is a laptop whose LAN is also reachable in the
// clear, and a gateway whose policy for alice and bob (OU eng) pushes the
// kill switch, for carol (OU ops) not: two kill switches at once block
// each other's tunnels (each lets out only its own device and mark).
// connect starts a profile without a device (as a bundle: the first free
// spN) and waits for its session.
func profilesWithKillSwitch(t *testing.T) (*Topo, func(name string) *Laptop) {
	t.Helper()
	tp := newTopo(t, false)
	tp.plainInternet()
	k := stdPKI(t)
	k.Issue("carol", []string{"ops"})
	sock := shortTempDir(t)
	on := true
	eng := restrictive
	eng.KillSwitch = &on
	ops := restrictive
	ops.Name, ops.Match = "ops", map[string][]string{"ou": {"ops"}}
	tp.startGateway(defaultServerConf(k, "wireguard", sock, eng, ops))
	return tp, func(name string) *Laptop {
		t.Helper()
		cc := clientConf(k, name, "wireguard", sock)
		cc.Device = ""
		l := tp.startLaptop(tp.Lap, name, cc)
		if !waitFor(15*time.Second, func() bool { st, err := l.Status(); return err == nil && st.Connected }) {
			t.Fatalf("%s never connected:\n%s", name, tail(l.Proc.Log(), 20))
		}
		return l
	}
}

// asUser: a user who is not root, with the laptop's directories as the
// client unit makes them (its RuntimeDirectory= and the profiles root's,
// 0700, inside directories anyone may pass), runs status and down while a
// tunnel is up. They cannot see it, so they must not be told that nothing
// is up: they are told they may not look, and how to (sudo).
func asUser(t *testing.T, tp *Topo, home string) {
	t.Helper()
	if nobodyBin == "" {
		t.Fatal("no copy of the binary for nobody (TestMain runs as root and makes it)")
	}
	setpriv := testenv.Command(t, "setpriv")
	for d := home; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil { // as /run and /etc are: passable
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"status"}, "cannot tell which tunnels are up: " + filepath.Join(home, "run") + ": permission denied (run it with sudo"},
		{[]string{"status", "--json"}, "cannot tell which tunnels are up"},
		{[]string{"down"}, "cannot tell which tunnels are up"},
		{[]string{"status", "acme"}, "admin socket " + filepath.Join(home, "run", "client-acme.sock") + ": permission denied (run it with sudo"},
	} {
		cmd := exec.Command("ip", append([]string{"netns", "exec", tp.Lap, setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", nobodyBin}, tt.args...)...)
		cmd.Env = append(os.Environ(), tp.laptopEnv(tp.Lap)...)
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), tt.want) || strings.Contains(string(out), "not up") {
			t.Errorf("sallyport %v as nobody while acme is up: %v\n%s\nwant exit 1 and %q", tt.args, err, out, tt.want)
		}
	}
}
