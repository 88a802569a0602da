package client

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/vishvananda/netlink"

	"github.com/sallyport/sallyport/client/policyroute"
	"github.com/sallyport/sallyport/internal/testenv"
)

// fakeResolved records the calls systemd-resolved's Manager would get.
type fakeResolved struct {
	mu    sync.Mutex
	calls []string
	dns   []linkAddress
	doms  []linkDomain
	links map[int32]bool // links that have settings (until RevertLink)
}

func (f *fakeResolved) set(idx int32) {
	f.mu.Lock()
	if f.links == nil {
		f.links = map[int32]bool{}
	}
	f.links[idx] = true
	f.mu.Unlock()
}

// configured lists the links with settings.
func (f *fakeResolved) configured() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.links)
}

func (f *fakeResolved) note(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeResolved) SetLinkDNS(idx int32, addrs []linkAddress) *dbus.Error {
	f.note("SetLinkDNS " + itoa(idx))
	f.set(idx)
	f.mu.Lock()
	f.dns = addrs
	f.mu.Unlock()
	return nil
}

func (f *fakeResolved) SetLinkDomains(idx int32, doms []linkDomain) *dbus.Error {
	f.note("SetLinkDomains " + itoa(idx))
	f.set(idx)
	f.mu.Lock()
	f.doms = doms
	f.mu.Unlock()
	return nil
}

func (f *fakeResolved) RevertLink(idx int32) *dbus.Error {
	f.note("RevertLink " + itoa(idx))
	f.mu.Lock()
	delete(f.links, idx)
	f.mu.Unlock()
	return nil
}

func itoa(i int32) string { return strconv.Itoa(int(i)) }

func (f *fakeResolved) log() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// privateBus starts a dbus-daemon of its own on a socket in a temp dir and
// returns its address; the daemon is stopped at cleanup.
func privateBus(t *testing.T) string {
	t.Helper()
	bin := testenv.Command(t, "dbus-daemon")
	dir := t.TempDir()
	sock := filepath.Join(dir, "bus")
	cmd := exec.Command(bin, "--session", "--nofork", "--nopidfile", "--address=unix:path="+sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; i < 500; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return "unix:path=" + sock
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("dbus-daemon did not create its socket")
	return ""
}

// startFakeResolved runs a fake resolved on a private bus, which becomes
// the system bus of the test (DBUS_SYSTEM_BUS_ADDRESS).
func startFakeResolved(t *testing.T) *fakeResolved {
	t.Helper()
	addr := privateBus(t)
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fake := &fakeResolved{}
	if err := conn.Export(fake, resolvedPath, resolvedName+".Manager"); err != nil {
		t.Fatal(err)
	}
	if reply, err := conn.RequestName(resolvedName, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("request name: %v %v", reply, err)
	}
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", addr)
	return fake
}

// TestDNSOverDBus runs setDNS and revertDNS against a fake resolved on a
// private bus: per-link DNS with the right families and bytes, routing-only
// domains, RevertLink on down, and resolv.conf left alone.
func TestDNSOverDBus(t *testing.T) {
	fake := startFakeResolved(t)
	rc, state := useTempResolvConf(t)

	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	mode, err := setDNS(state, "lo", pushed, []string{"~corp.example", "lab.example"})
	if err != nil || mode != DNSModeResolved {
		t.Fatalf("setDNS: mode %q err %v", mode, err)
	}
	if err := revertDNS(state, "lo"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(linkRecordFile(state, "lo")); !os.IsNotExist(err) {
		t.Errorf("the link record outlived a clean revert: %v", err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	idx := itoa(int32(lo.Index))
	want := []string{"SetLinkDNS " + idx, "SetLinkDomains " + idx, "RevertLink " + idx}
	if strings.Join(fake.calls, ",") != strings.Join(want, ",") {
		t.Fatalf("calls %v, want %v", fake.calls, want)
	}
	if len(fake.dns) != 2 || fake.dns[0].Family != 2 || string(fake.dns[0].Address) != string([]byte{10, 8, 0, 53}) ||
		fake.dns[1].Family != 10 || len(fake.dns[1].Address) != 16 {
		t.Errorf("SetLinkDNS got %+v", fake.dns)
	}
	if len(fake.doms) != 2 || fake.doms[0] != (linkDomain{"corp.example", true}) || fake.doms[1] != (linkDomain{"lab.example", true}) {
		t.Errorf("SetLinkDomains got %+v", fake.doms)
	}
	if got := read(t, rc); got != origResolv {
		t.Errorf("resolved mode touched resolv.conf: %q", got)
	}
}

// TestDNSFallback: with no resolved on the bus, or no bus at all, setDNS
// rewrites resolv.conf and revertDNS restores it.
func TestDNSFallback(t *testing.T) {
	for _, tt := range []struct {
		name string
		bus  func(t *testing.T) string
	}{
		{"bus without resolved", privateBus},
		{"no bus", func(t *testing.T) string { return "unix:path=" + filepath.Join(t.TempDir(), "none") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", tt.bus(t))
			rc, state := useTempResolvConf(t)
			mode, err := setDNS(state, "lo", pushed, nil)
			if err != nil || mode != DNSModeResolvConf {
				t.Fatalf("setDNS: mode %q err %v", mode, err)
			}
			if !strings.HasPrefix(read(t, rc), "# sallyport: DNS of tunnel lo\n") {
				t.Fatalf("resolv.conf not rewritten: %q", read(t, rc))
			}
			if err := revertDNS(state, "lo"); err != nil {
				t.Fatal(err)
			}
			if got := read(t, rc); got != origResolv {
				t.Fatalf("down left %q", got)
			}
		})
	}
}

// useTempResolvConf points the resolv.conf fallback at a temp file holding
// origResolv, and returns it and a temp state directory.
func useTempResolvConf(t *testing.T) (string, string) {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(p, []byte(origResolv), 0o644); err != nil {
		t.Fatal(err)
	}
	saved := resolvConfPath
	resolvConfPath = p
	t.Cleanup(func() { resolvConfPath = saved })
	return p, filepath.Join(dir, "state")
}

// After a crash (the client set DNS and never reverted it), recoverDNS
// undoes it: resolv.conf back byte for byte, once; resolved's link
// reverted, also when the link is gone (resolved is told anyway), but not
// when its index now belongs to another link; the records go.
func TestDNSRecover(t *testing.T) {
	t.Run("resolv.conf", func(t *testing.T) {
		t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+filepath.Join(t.TempDir(), "none"))
		rc, state := useTempResolvConf(t)
		if mode, err := setDNS(state, "sp0", pushed, []string{"corp.example"}); err != nil || mode != DNSModeResolvConf {
			t.Fatalf("setDNS: %q %v", mode, err)
		}
		// kill -9: nothing reverted.
		if n, err := recoverDNS(state, "sp0"); err != nil || n != 1 {
			t.Fatalf("recoverDNS = %d, %v", n, err)
		}
		if got := read(t, rc); got != origResolv {
			t.Fatalf("after recovery resolv.conf is %q", got)
		}
		if n, err := recoverDNS(state, "sp0"); err != nil || n != 0 {
			t.Fatalf("second recoverDNS = %d, %v", n, err)
		}
	})
	t.Run("resolved", func(t *testing.T) {
		fake := startFakeResolved(t)
		rc, state := useTempResolvConf(t)
		lo, _ := net.InterfaceByName("lo")
		if mode, err := setDNS(state, "lo", pushed, []string{"corp.example"}); err != nil || mode != DNSModeResolved {
			t.Fatalf("setDNS: %q %v", mode, err)
		}
		if fake.configured() != 1 {
			t.Fatal("the fake resolved has no settings")
		}
		if n, err := recoverDNS(state, "lo"); err != nil || n != 1 {
			t.Fatalf("recoverDNS = %d, %v", n, err)
		}
		if fake.configured() != 0 || !slices.Contains(fake.log(), "RevertLink "+itoa(int32(lo.Index))) {
			t.Fatalf("resolved not reverted: %v", fake.log())
		}
		if _, err := os.Stat(linkRecordFile(state, "lo")); !os.IsNotExist(err) {
			t.Errorf("link record left: %v", err)
		}
		if got := read(t, rc); got != origResolv {
			t.Errorf("resolved mode touched resolv.conf: %q", got)
		}
		// The link is gone (its TUN died): resolved is told all the same.
		if err := saveLinkRecord(state, linkRecord{Index: 1 << 30, Name: "sp0"}); err != nil {
			t.Fatal(err)
		}
		if n, err := recoverDNS(state, "sp0"); err != nil || n != 1 || !slices.Contains(fake.log(), "RevertLink "+itoa(1<<30)) {
			t.Fatalf("gone link: %d %v %v", n, err, fake.log())
		}
		// The index now belongs to another link (lo): left alone.
		if err := saveLinkRecord(state, linkRecord{Index: int32(lo.Index), Name: "sp1"}); err != nil {
			t.Fatal(err)
		}
		calls := len(fake.log())
		if n, err := recoverDNS(state, "sp1"); err != nil || n != 0 || len(fake.log()) != calls {
			t.Fatalf("someone else's link reverted: %d %v %v", n, err, fake.log())
		}
		if _, err := os.Stat(linkRecordFile(state, "sp1")); !os.IsNotExist(err) {
			t.Errorf("link record left: %v", err)
		}
		// A damaged record is reported and dropped.
		if err := os.WriteFile(linkRecordFile(state, "sp2"), []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
		if n, err := recoverDNS(state, "sp2"); err == nil || n != 0 {
			t.Fatalf("damaged record: %d %v", n, err)
		}
		if _, err := os.Stat(linkRecordFile(state, "sp2")); !os.IsNotExist(err) {
			t.Errorf("damaged record left: %v", err)
		}
	})
}

// The laptop's real OpenDevice recovers the DNS of the device the kernel
// gave it (sp0 here), not of the configured pattern sp%d: a crashed run
// of sp0 left resolv.conf rewritten, and the next up puts it back before
// anything else.
func TestOpenDeviceRecoversDNS(t *testing.T) {
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+filepath.Join(t.TempDir(), "none"))
	rc, state := useTempResolvConf(t)
	if _, err := setDNS(state, "sp0", pushed, nil); err != nil {
		t.Fatal(err)
	}
	inNetns(t, func() {
		dev, err := osSystem{stateDir: state}.OpenDevice(AutoDevice, "water", 1500)
		if err != nil {
			t.Fatal(err)
		}
		defer dev.Close()
		if dev.Name() != "sp0" {
			t.Fatalf("got %s, want sp0 in a fresh namespace", dev.Name())
		}
	})
	if got := read(t, rc); got != origResolv {
		t.Fatalf("resolv.conf after the next up: %q", got)
	}
}

// `down` with no client running (it was killed) restores the DNS it left:
// RemoveLeftovers puts resolv.conf back byte for byte and counts it.
func TestRemoveLeftoversDNS(t *testing.T) {
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+filepath.Join(t.TempDir(), "none"))
	rc, state := useTempResolvConf(t)
	if _, err := setDNS(state, "sp0", pushed, nil); err != nil {
		t.Fatal(err)
	}
	cfg := &Config{Tunnel: TunnelConfig{Device: "sp0", Table: DefaultTable}, stateDir: state}
	inNetns(t, func() {
		n, err := RemoveLeftovers(cfg, testLogger(&syncBuffer{}))
		if err != nil || n != 1 {
			t.Errorf("RemoveLeftovers = %d, %v; want the DNS counted", n, err)
		}
	})
	if got := read(t, rc); got != origResolv {
		t.Fatalf("resolv.conf after down: %q", got)
	}
}

// `down` of a profile that is not running, while another client holds the
// device it crashed on: profile A was killed on sp0, B came up and got
// sp0, and `down A` must not take B's kill switch, routes and DNS away
// (B's traffic would leave in the clear). With the device gone, the same
// call removes all of it.
func TestRemoveLeftoversLiveDevice(t *testing.T) {
	rc, cfg := autoProfile(t)
	state := cfg.stateDir
	if err := writeDeviceRecord(cfg, "sp0"); err != nil {
		t.Fatal(err)
	}
	inNetns(t, func() {
		if _, err := setDNS(state, "sp0", pushed, nil); err != nil {
			t.Fatal(err)
		}
		if err := installKillSwitch(newKillSpec("sp0", DefaultTable, []string{"192.0.2.1:8443"}, nil)); err != nil {
			t.Fatal(err)
		}
		plan := planRoutes(pfx("10.1.0.0/16"), "sp0", DefaultTable, false)
		for _, r := range plan.rules {
			if err := policyroute.AddRule(r); err != nil {
				t.Fatal(err)
			}
		}
		veth(t, "sp0") // the running client's device
		for _, r := range plan.routes {
			if err := policyroute.ReplaceTableRoute(r); err != nil {
				t.Fatal(err)
			}
		}
		logs := &syncBuffer{}
		if n, err := RemoveLeftovers(cfg, testLogger(logs)); n != 0 || err != nil {
			t.Errorf("with sp0 held by a running client: RemoveLeftovers = %d, %v; want nothing touched", n, err)
		}
		mustContain(t, logs.String(), "left alone")
		in, err := installed(osSystem{}, "sp0", DefaultTable)
		if err != nil || !in.KillSwitch || len(in.Routes) != 2 || len(in.Rules) != 1 {
			t.Fatalf("the running client lost its state: %+v %v", in, err)
		}
		if ownerOf([]byte(read(t, rc))) != "sp0" {
			t.Fatalf("the running client lost its DNS: %q", read(t, rc))
		}
		if _, err := os.Stat(deviceFile(cfg)); err != nil {
			t.Fatalf("the device record went: %v", err)
		}

		l, _ := netlink.LinkByName("sp0")
		if err := netlink.LinkDel(l); err != nil {
			t.Fatal(err)
		}
		if n, err := RemoveLeftovers(cfg, testLogger(logs)); n != 4 || err != nil {
			t.Errorf("with sp0 gone: RemoveLeftovers = %d, %v; want rule, route, DNS and kill switch", n, err)
		}
		if in, err := installed(osSystem{}, "sp0", DefaultTable); err != nil || in.KillSwitch || len(in.Routes)+len(in.Rules) != 0 {
			t.Fatalf("left behind: %+v %v", in, err)
		}
	})
	if got := read(t, rc); got != origResolv {
		t.Fatalf("resolv.conf after down: %q", got)
	}
}

// After a crash and a reboot the runtime directory is empty, but the
// device record lives in the state directory: `down` of a profile without
// a device still finds that it ran on sp1 and restores resolv.conf (a
// static one keeps the tunnel's resolvers across the reboot otherwise). A
// record where it used to be (beside the socket) is still read.
func TestRemoveLeftoversAfterReboot(t *testing.T) {
	rc, cfg := autoProfile(t)
	state, run := cfg.stateDir, filepath.Dir(cfg.Admin.Socket)
	if _, err := setDNS(state, "sp1", pushed, nil); err != nil {
		t.Fatal(err)
	}
	if err := writeDeviceRecord(cfg, "sp1"); err != nil {
		t.Fatal(err)
	}
	// The reboot: /run is a tmpfs.
	if err := os.RemoveAll(run); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	inNetns(t, func() {
		if n, err := RemoveLeftovers(cfg, testLogger(&syncBuffer{})); n != 1 || err != nil {
			t.Errorf("RemoveLeftovers = %d, %v; want sp1's DNS restored", n, err)
		}
	})
	if got := read(t, rc); got != origResolv {
		t.Fatalf("resolv.conf after down: %q", got)
	}
	if readDeviceRecord(cfg) != "" {
		t.Error("the record stayed after down")
	}
	if _, err := setDNS(state, "sp2", pushed, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(legacyDeviceFile(cfg), []byte("sp2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	inNetns(t, func() {
		if n, err := RemoveLeftovers(cfg, testLogger(&syncBuffer{})); n != 1 || err != nil {
			t.Errorf("legacy record: RemoveLeftovers = %d, %v", n, err)
		}
	})
	if got := read(t, rc); got != origResolv {
		t.Fatalf("resolv.conf after down (legacy record): %q", got)
	}
}

// autoProfile is a profile without a device, with its own resolv.conf,
// state directory and runtime directory, and no system bus.
func autoProfile(t *testing.T) (resolvConf string, cfg *Config) {
	t.Helper()
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path="+filepath.Join(t.TempDir(), "none"))
	rc, state := useTempResolvConf(t)
	return rc, &Config{Tunnel: TunnelConfig{Device: AutoDevice, Table: DefaultTable, tableAuto: true},
		Admin: AdminConfig{Socket: filepath.Join(t.TempDir(), "client-acme.sock")}, stateDir: state}
}
