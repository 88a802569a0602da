package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/sallyport/sallyport/internal/testenv"
)

const lapResolv = "# the laptop's own\nnameserver 192.0.2.1\nsearch home.example\n"

// dnsLaptop starts a gateway whose policy pushes DNS and writes alice's
// client config (device sp0); the test starts the client.
func (tp *Topo) dnsLaptop() *Laptop {
	t := tp.t
	t.Helper()
	k := stdPKI(t)
	sock := shortTempDir(t)
	pol := restrictive
	pol.DNS = []string{"198.19.77.53", "corp.example"}
	tp.startGateway(defaultServerConf(k, "wireguard", sock, pol))
	cc := clientConf(k, "alice", "wireguard", sock)
	l := &Laptop{tp: tp, NS: tp.Lap, Conf: filepath.Join(t.TempDir(), "alice.toml"), Socket: cc.Socket, Dev: cc.Device}
	render(t, clientTmpl, cc, l.Conf)
	return l
}

// TestDNSResolvConf runs the laptop's DNS fallback for real: with no
// systemd-resolved on the bus the client rewrites resolv.conf (the laptop
// namespace's own, which ip netns exec binds over /etc/resolv.conf), says
// so in status, and `down` restores the original byte for byte. After a
// crash (SIGKILL) the next `up` recovers the original before it applies
// the pushed DNS again, and its `down` restores it; after another crash,
// `down` with no client running restores it too.
func TestDNSResolvConf(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t, false)
	resolv := filepath.Join("/etc/netns", tp.Lap, "resolv.conf") // removed with the topology
	if err := os.WriteFile(resolv, []byte(lapResolv), 0o644); err != nil {
		t.Fatal(err)
	}
	l := tp.dnsLaptop()
	// The laptop's own state directory, no system bus (laptopEnv).
	backup := filepath.Join(tp.home[tp.Lap], "state", "resolv.conf.sp0.orig")
	up := func(name string) {
		l.Proc = tp.start(tp.Lap, name, nil, binPath, "up", "-c", l.Conf)
		l.waitUp(15 * time.Second)
		var st ClientStatus
		if !waitFor(5*time.Second, func() bool { st, _ = l.Status(); return st.DNSMode != "" }) || st.DNSMode != "resolv.conf" {
			t.Fatalf("%s: status dns_mode %q, want resolv.conf", name, st.DNSMode)
		}
		b, _ := os.ReadFile(resolv)
		if !strings.HasPrefix(string(b), "# sallyport: DNS of tunnel sp0\n") || !strings.Contains(string(b), "nameserver 198.19.77.53\n") ||
			!strings.Contains(string(b), "search corp.example home.example\n") {
			t.Fatalf("%s: resolv.conf while up:\n%s", name, b)
		}
		if b, err := os.ReadFile(backup); err != nil || string(b) != lapResolv {
			t.Fatalf("%s: backup %q %v", name, b, err)
		}
	}
	restored := func(when string) {
		t.Helper()
		if b, _ := os.ReadFile(resolv); string(b) != lapResolv {
			t.Fatalf("%s resolv.conf is:\n%s\nwant the original:\n%s", when, b, lapResolv)
		}
		if _, err := os.Stat(backup); !os.IsNotExist(err) {
			t.Fatalf("backup left %s: %v", when, err)
		}
	}
	down := func() {
		if out, err := tp.sp(tp.Lap, "down", "--socket", l.Socket); err != nil {
			t.Fatalf("down: %v: %s", err, out)
		}
		l.Proc.Wait(10 * time.Second)
		restored("after down")
	}
	kill := func() {
		l.Proc.Signal(syscall.SIGKILL)
		l.Proc.Wait(5 * time.Second)
		if b, _ := os.ReadFile(resolv); string(b) == lapResolv {
			t.Fatal("the crash test proves nothing: resolv.conf was restored without a restore")
		}
		// The killed client's TUN goes away with its file descriptor.
		waitFor(5*time.Second, func() bool { return !linkExists(tp.Lap, "sp0") })
	}

	up("client1")
	down()

	up("client2")
	kill()
	up("client3")
	down()

	up("client4")
	kill()
	out, err := tp.sp(tp.Lap, "down", "-c", l.Conf)
	if err != nil || !strings.Contains(out, "DNS") {
		t.Fatalf("down after kill -9: %v: %s", err, out)
	}
	restored("after kill -9 and down")
}

// helperFakeResolved stands in for systemd-resolved on the D-Bus bus at
// addr: it takes org.freedesktop.resolve1, prints "ready", then one line
// per call, "call=METHOD idx=N links=K" with K the links that still have
// settings afterwards.
func helperFakeResolved(addr string) error {
	conn, err := dbus.Connect(addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	f := &e2eResolved{links: map[int32]bool{}}
	if err := conn.Export(f, "/org/freedesktop/resolve1", "org.freedesktop.resolve1.Manager"); err != nil {
		return err
	}
	if reply, err := conn.RequestName("org.freedesktop.resolve1", dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		return fmt.Errorf("request name: %v %v", reply, err)
	}
	fmt.Println("ready")
	select {} // until killed
}

// e2eResolved is the fake Manager's state.
type e2eResolved struct {
	mu    sync.Mutex
	links map[int32]bool
}

func (f *e2eResolved) note(method string, idx int32, set bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if set {
		f.links[idx] = true
	} else {
		delete(f.links, idx)
	}
	fmt.Printf("call=%s idx=%d links=%d\n", method, idx, len(f.links))
}

func (f *e2eResolved) SetLinkDNS(idx int32, _ []struct {
	Family  int32
	Address []byte
}) *dbus.Error {
	f.note("SetLinkDNS", idx, true)
	return nil
}

func (f *e2eResolved) SetLinkDomains(idx int32, _ []struct {
	Domain      string
	RoutingOnly bool
}) *dbus.Error {
	f.note("SetLinkDomains", idx, true)
	return nil
}

func (f *e2eResolved) RevertLink(idx int32) *dbus.Error {
	f.note("RevertLink", idx, false)
	return nil
}

// TestDNSResolvedCrash: where systemd-resolved runs (a fake one on a
// private bus here), the pushed DNS goes to the TUN's link over D-Bus and
// resolv.conf is left alone; after kill -9, `down` with no client running
// reverts that link, leaving resolved with no settings from sallyport.
func TestDNSResolvedCrash(t *testing.T) {
	requireRoot(t)
	daemon := testenv.Command(t, "dbus-daemon")
	t.Parallel()
	tp := newTopo(t, false)
	bus := filepath.Join(shortTempDir(t), "bus")
	addr := "unix:path=" + bus
	tp.start(tp.Lap, "dbus-daemon", nil, daemon, "--session", "--nofork", "--nopidfile", "--address="+addr)
	if !waitFor(10*time.Second, func() bool { _, err := os.Stat(bus); return err == nil }) {
		t.Fatal("dbus-daemon did not create its socket")
	}
	fake := tp.helper(tp.Lap, "fakeresolved", addr)
	waitReady(t, fake)
	env := []string{"DBUS_SYSTEM_BUS_ADDRESS=" + addr}

	l := tp.dnsLaptop()
	resolv := filepath.Join("/etc/netns", tp.Lap, "resolv.conf")
	before, _ := os.ReadFile(resolv)

	l.Proc = tp.start(tp.Lap, "client", env, binPath, "up", "-c", l.Conf)
	l.waitUp(15 * time.Second)
	var st ClientStatus
	if !waitFor(5*time.Second, func() bool { st, _ = l.Status(); return st.DNSMode != "" }) || st.DNSMode != "systemd-resolved" {
		t.Fatalf("status dns_mode %q, want systemd-resolved", st.DNSMode)
	}
	link := strings.SplitN(strings.TrimSpace(run(t, "ip", "-n", tp.Lap, "-o", "link", "show", "dev", "sp0")), ":", 2)[0]
	if !strings.Contains(fake.Out(), "call=SetLinkDNS idx="+link+" ") {
		t.Fatalf("resolved was not given sp0's (link %s) DNS: %s", link, fake.Out())
	}

	l.Proc.Signal(syscall.SIGKILL)
	l.Proc.Wait(5 * time.Second)
	waitFor(5*time.Second, func() bool { return !linkExists(tp.Lap, "sp0") })
	cmd := exec.Command("ip", "netns", "exec", tp.Lap, binPath, "down", "-c", l.Conf)
	cmd.Env = append(append(os.Environ(), tp.laptopEnv(tp.Lap)...), env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("down after kill -9: %v: %s", err, out)
	}
	if !strings.Contains(fake.Out(), "call=RevertLink idx="+link+" links=0") {
		t.Fatalf("down after kill -9 did not revert link %s: %s", link, fake.Out())
	}
	if after, _ := os.ReadFile(resolv); string(after) != string(before) {
		t.Fatalf("resolved mode touched resolv.conf:\n%s", after)
	}
}
