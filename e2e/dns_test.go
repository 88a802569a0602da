package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const lapResolv = "# the laptop's own\nnameserver 192.0.2.1\nsearch home.example\n"

// TestDNSResolvConf runs the laptop's DNS fallback for real: with no
// systemd-resolved on the bus the client rewrites resolv.conf (the laptop
// namespace's own, which ip netns exec binds over /etc/resolv.conf), says
// so in status, and `down` restores the original byte for byte. After a
// crash (SIGKILL) the next `up` recovers the original before it applies
// the pushed DNS again, and its `down` restores it.
func TestDNSResolvConf(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t, false)
	etc := filepath.Join("/etc/netns", tp.Lap)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	resolv := filepath.Join(etc, "resolv.conf")
	if err := os.WriteFile(resolv, []byte(lapResolv), 0o644); err != nil {
		t.Fatal(err)
	}
	k := stdPKI(t)
	sock := shortTempDir(t)
	pol := restrictive
	pol.DNS = []string{"198.19.77.53", "corp.example"}
	tp.startGateway(defaultServerConf(k, "wireguard", sock, pol))
	state := t.TempDir()
	cc := clientConf(k, "alice", "wireguard", sock)
	l := &Laptop{tp: tp, NS: tp.Lap, Conf: filepath.Join(t.TempDir(), "alice.toml"), Socket: cc.Socket, Dev: cc.Device}
	render(t, clientTmpl, cc, l.Conf)
	env := []string{"STATE_DIRECTORY=" + state, "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent/sallyport-test-bus"}
	backup := filepath.Join(state, "resolv.conf.sp0.orig")
	up := func(name string) {
		l.Proc = tp.start(tp.Lap, name, env, binPath, "up", "-c", l.Conf)
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
	down := func() {
		if out, err := tp.sp(tp.Lap, "down", "--socket", l.Socket); err != nil {
			t.Fatalf("down: %v: %s", err, out)
		}
		l.Proc.Wait(10 * time.Second)
		if b, _ := os.ReadFile(resolv); string(b) != lapResolv {
			t.Fatalf("after down resolv.conf is:\n%s\nwant the original:\n%s", b, lapResolv)
		}
		if _, err := os.Stat(backup); !os.IsNotExist(err) {
			t.Fatalf("backup left after down: %v", err)
		}
	}

	up("client1")
	down()

	up("client2")
	l.Proc.Signal(syscall.SIGKILL)
	l.Proc.Wait(5 * time.Second)
	if b, _ := os.ReadFile(resolv); string(b) == lapResolv {
		t.Fatal("the crash test proves nothing: resolv.conf was restored without a restore")
	}
	// The killed client's TUN goes away with its file descriptor.
	waitFor(5*time.Second, func() bool { return !linkExists(tp.Lap, "sp0") })
	up("client3")
	down()
}
