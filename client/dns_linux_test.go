package client

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/sallyport/sallyport/internal/testenv"
)

// fakeResolved records the calls systemd-resolved's Manager would get.
type fakeResolved struct {
	mu    sync.Mutex
	calls []string
	dns   []linkAddress
	doms  []linkDomain
}

func (f *fakeResolved) note(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeResolved) SetLinkDNS(idx int32, addrs []linkAddress) *dbus.Error {
	f.note("SetLinkDNS " + itoa(idx))
	f.mu.Lock()
	f.dns = addrs
	f.mu.Unlock()
	return nil
}

func (f *fakeResolved) SetLinkDomains(idx int32, doms []linkDomain) *dbus.Error {
	f.note("SetLinkDomains " + itoa(idx))
	f.mu.Lock()
	f.doms = doms
	f.mu.Unlock()
	return nil
}

func (f *fakeResolved) RevertLink(idx int32) *dbus.Error {
	f.note("RevertLink " + itoa(idx))
	return nil
}

func itoa(i int32) string { return strconv.Itoa(int(i)) }

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

// TestDNSOverDBus runs setDNS and revertDNS against a fake resolved on a
// private bus: per-link DNS with the right families and bytes, routing-only
// domains, RevertLink on down, and resolv.conf left alone.
func TestDNSOverDBus(t *testing.T) {
	addr := privateBus(t)
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fake := &fakeResolved{}
	if err := conn.Export(fake, resolvedPath, resolvedName+".Manager"); err != nil {
		t.Fatal(err)
	}
	if reply, err := conn.RequestName(resolvedName, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("request name: %v %v", reply, err)
	}
	t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", addr)
	rc := useTempResolvConf(t)

	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	mode, err := setDNS("lo", pushed, []string{"~corp.example", "lab.example"})
	if err != nil || mode != DNSModeResolved {
		t.Fatalf("setDNS: mode %q err %v", mode, err)
	}
	if err := revertDNS("lo"); err != nil {
		t.Fatal(err)
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
			rc := useTempResolvConf(t)
			mode, err := setDNS("lo", pushed, nil)
			if err != nil || mode != DNSModeResolvConf {
				t.Fatalf("setDNS: mode %q err %v", mode, err)
			}
			if !strings.HasPrefix(read(t, rc), "# sallyport: DNS of tunnel lo\n") {
				t.Fatalf("resolv.conf not rewritten: %q", read(t, rc))
			}
			if err := revertDNS("lo"); err != nil {
				t.Fatal(err)
			}
			if got := read(t, rc); got != origResolv {
				t.Fatalf("down left %q", got)
			}
		})
	}
}

// useTempResolvConf points the resolv.conf fallback at a temp file holding
// origResolv and a temp state directory.
func useTempResolvConf(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(p, []byte(origResolv), 0o644); err != nil {
		t.Fatal(err)
	}
	saved := resolvConfPath
	resolvConfPath = p
	t.Cleanup(func() { resolvConfPath = saved })
	t.Setenv("STATE_DIRECTORY", filepath.Join(dir, "state"))
	return p
}
