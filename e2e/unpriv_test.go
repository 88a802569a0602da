package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testenv"
)

// unprivCaps are the only capabilities the packaged gateway unit grants.
const unprivCaps = ",+net_admin,+net_bind_service"

// TestUnprivilegedGateway runs the gateway the way sallyport-server.service
// does: as an unprivileged user (nobody here) holding only CAP_NET_ADMIN and
// CAP_NET_BIND_SERVICE (ambient, and nothing else in the bounding set), with
// no-new-privs, listening on port 443 and reading a key owned by that user.
// A laptop connects and pings the LAN through it; status, reload and kick
// work over its admin socket.
func TestUnprivilegedGateway(t *testing.T) {
	requireRoot(t)
	testenv.Command(t, "setpriv")
	for _, drv := range drivers {
		t.Run(drv, func(t *testing.T) {
			t.Parallel()
			tp := newTopo(t, false)
			k := stdPKI(t)
			sock := shortTempDir(t)
			g, sc := unprivGateway(t, tp, k, drv, sock, unprivCaps)
			g.Start()

			// The process really is nobody with only the two capabilities.
			status, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(g.Proc.Cmd.Process.Pid), "status"))
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"Uid:\t65534\t65534\t65534\t65534", "CapEff:\t0000000000001400", "CapBnd:\t0000000000001400", "NoNewPrivs:\t1"} {
				if !strings.Contains(string(status), want) {
					t.Fatalf("gateway process status lacks %q:\n%s", want, status)
				}
			}

			cc := clientConf(k, "alice", drv, sock)
			cc.Server = sc.Listen
			lap := tp.startLaptop(tp.Lap, "alice", cc)
			lap.waitUp(15 * time.Second)
			if got := tp.ping(tp.Lap, lanHost, 3); got != 3 {
				t.Fatalf("ping %s through the unprivileged gateway: %d/3 replies\n%s", lanHost, got, tail(g.Proc.Log(), 30))
			}
			if _, ok := g.Session("alice"); !ok {
				t.Fatal("no alice session in the unprivileged gateway's status")
			}
			if out, err := tp.sp(tp.GW, "server", "reload", "--socket", g.Socket); err != nil {
				t.Fatalf("reload: %v: %s", err, out)
			}
			// What systemctl reload sends (the unit's ExecReload).
			g.Proc.Signal(syscall.SIGHUP)
			if !waitFor(10*time.Second, func() bool { return strings.Contains(g.Proc.Log(), `msg="configuration reloaded" trigger=SIGHUP`) }) {
				t.Fatalf("no reload on SIGHUP:\n%s", tail(g.Proc.Log(), 10))
			}
			if g.Proc.Exited() {
				t.Fatal("SIGHUP stopped the gateway")
			}
			// Flags after the device, the order kick --help shows.
			if out, err := tp.sp(tp.GW, "server", "kick", "alice", "--socket", g.Socket); err != nil {
				t.Fatalf("kick: %v: %s", err, out)
			}
			g.Proc.Signal(syscall.SIGTERM)
			if !g.Proc.Wait(10 * time.Second) {
				t.Fatal("unprivileged gateway did not stop on SIGTERM")
			}
			if code := g.Proc.ExitCode(); code != 0 {
				t.Fatalf("unprivileged gateway exited %d:\n%s", code, tail(g.Proc.Log(), 30))
			}
			if linkExists(tp.GW, "sp0") {
				t.Error("unprivileged gateway left its TUN device behind")
			}
		})
	}
}

// unprivGateway prepares (does not start) a gateway that runs as nobody with
// only the capabilities caps (setpriv syntax, e.g. "+net_admin").
func unprivGateway(t *testing.T, tp *Topo, k *PKI, drv, sock, caps string) (*Gateway, ServerConf) {
	t.Helper()
	// Everything the gateway reads lives in a directory only nobody
	// may enter; the binary is copied there too so no parent
	// directory of the build tree needs to be open to it.
	home := shortTempDir(t)
	crt, key := k.Server(gwName)
	files := map[string]string{"server.crt": crt, "server.key": key, "ca.crt": k.CA()}
	for dst, src := range files {
		copyFile(t, src, filepath.Join(home, dst))
	}
	sc := defaultServerConf(k, drv, sock, restrictive)
	sc.Listen = gwAddr + ":443" // a privileged port: needs CAP_NET_BIND_SERVICE
	sc.Cert, sc.Key, sc.ClientCA, sc.CRL = filepath.Join(home, "server.crt"), filepath.Join(home, "server.key"), filepath.Join(home, "ca.crt"), ""
	sc.Socket = filepath.Join(home, "run", "gw.sock")
	// Distributions make /dev/net/tun 0666 (udev's default rule); some
	// containers leave it 0600, which no capability short of
	// CAP_DAC_OVERRIDE opens. Give the gateway's mount namespace (ip
	// netns exec makes one) a node with the usual mode.
	tun := filepath.Join(shortTempDir(t), "tun")
	run(t, "mknod", "-m", "0666", tun, "c", "10", "200")
	g := &Gateway{tp: tp, Conf: filepath.Join(home, "server.toml"), Socket: sc.Socket, Wrap: []string{
		"sh", "-c", `mount --bind "$0" /dev/net/tun && exec "$@"`, tun,
		"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--no-new-privs",
		"--inh-caps=-all" + caps, "--ambient-caps=-all" + caps, "--bounding-set=-all" + caps,
	}}
	render(t, serverTmpl, sc, g.Conf)
	for _, p := range []string{home, g.Conf, sc.Key} {
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if nobodyBin == "" {
		t.Fatal("no copy of the binary for nobody (TestMain runs as root and makes it)")
	}
	g.Bin = nobodyBin
	return g, sc
}

// nobodyBin is a copy of the binary under test that nobody may run (no
// parent directory of the build tree needs to be open to it); TestMain
// makes it before any test runs.
var nobodyBin string

// prepareNobodyBin copies bin into a new directory open to all and
// returns the directory.
func prepareNobodyBin(bin string) (string, error) {
	dir, err := os.MkdirTemp("", "sp-e2e-nobody")
	if err != nil {
		return "", fmt.Errorf("temp dir for the unprivileged binary: %w", err)
	}
	dst := filepath.Join(dir, "sallyport")
	b, err := os.ReadFile(bin)
	if err == nil {
		err = os.WriteFile(dst, b, 0o755)
	}
	if err == nil {
		err = os.Chmod(dir, 0o755)
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("copy %s for the unprivileged gateway: %w", bin, err)
	}
	nobodyBin = dst
	return dir, nil
}

// TestUnprivilegedStartErrors checks what an admin sees when the gateway
// lacks a capability: one plain line on stderr naming the device or port
// once, and the capability that is missing.
func TestUnprivilegedStartErrors(t *testing.T) {
	requireRoot(t)
	testenv.Command(t, "setpriv")
	for _, tt := range []struct {
		name, caps, want string
	}{
		{"no capabilities", "", "sallyport: open TUN sp0 (driver wireguard): operation not permitted (needs root or CAP_NET_ADMIN, and read-write access to /dev/net/tun)"},
		{"no bind capability", ",+net_admin", "sallyport: listen " + gwAddr + ":443: listen tcp " + gwAddr + ":443: bind: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tp := newTopo(t, false)
			g, _ := unprivGateway(t, tp, stdPKI(t), "wireguard", shortTempDir(t), tt.caps)
			g.Proc = tp.start(tp.GW, "server", nil, append(g.Wrap, g.Bin, "server", "-c", g.Conf)...)
			if !g.Proc.Wait(10 * time.Second) {
				t.Fatal("gateway without its capabilities did not exit")
			}
			if g.Proc.ExitCode() == 0 {
				t.Fatal("gateway without its capabilities exited 0")
			}
			var errLines []string
			for _, l := range strings.Split(strings.TrimSpace(g.Proc.Err()), "\n") {
				// Log lines before the failure (the forwarding warning, the
				// lease file) are slog lines; the fatal error is the one
				// plain line.
				if !strings.HasPrefix(l, "time=") {
					errLines = append(errLines, l)
				}
			}
			if len(errLines) != 1 || errLines[0] != tt.want {
				t.Fatalf("stderr:\n%s\nwant exactly one error line:\n%s", g.Proc.Err(), tt.want)
			}
		})
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestLaptopStartErrors checks what an employee sees when `sallyport up`
// cannot start: it exits 1 at once with one plain line naming what is
// wrong, and no format verb (a bundle names no device, so the client asks
// the kernel for "sp%d").
func TestLaptopStartErrors(t *testing.T) {
	requireRoot(t)
	testenv.Command(t, "setpriv")
	tp := newTopo(t, false)
	k := stdPKI(t)
	k.Issue("old", []string{"eng"}, "--not-before", "2020-01-01T00:00:00Z", "--not-after", "2021-01-01T00:00:00Z")
	noCaps := []string{"setpriv", "--no-new-privs", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all"}
	nobody := append([]string{"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"}, noCaps[1:]...)
	// home is a directory nobody may read but not write, holding the
	// config and its certificate and key (nobody's own).
	home := shortTempDir(t)
	crt, key := k.Device("alice")
	for _, f := range []string{crt, key, k.CA()} {
		copyFile(t, f, filepath.Join(home, filepath.Base(f)))
		if err := os.Chown(filepath.Join(home, filepath.Base(f)), 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	q := regexp.QuoteMeta
	oldCrt, _ := k.Device("old")
	for _, tt := range []struct {
		name   string
		device string   // whose certificate
		wrap   []string // runs as nobody when it starts with nobody's
		edit   func(cc *ClientConf)
		want   string // the whole of stderr, a regular expression
	}{
		{"no capabilities, bundle without device", "alice", noCaps, func(cc *ClientConf) { cc.Device = "" },
			q("sallyport: open TUN spN (first free, driver wireguard): operation not permitted (needs root or CAP_NET_ADMIN, and read-write access to /dev/net/tun)")},
		// Not "ports below 1024 need CAP_NET_BIND_SERVICE": it is a directory.
		{"admin socket directory not writable", "alice", nobody, func(cc *ClientConf) { cc.Socket = filepath.Join(home, "lap.sock") },
			q("sallyport: admin socket " + home + "/lap.sock: directory " + home + " is not writable by uid 65534 (permission denied): run as root (sudo), or set [admin] socket to a path in a directory this user may write")},
		{"admin socket directory cannot be made", "alice", nobody, func(cc *ClientConf) { cc.Socket = filepath.Join(home, "run", "lap.sock") },
			q("sallyport: admin socket " + home + "/run/lap.sock: uid 65534 may not create directory " + home + "/run (permission denied): run as root (sudo), or set [admin] socket to a path in a directory this user may write")},
		// Not "expires soon ... days_left=-1800" and a dial.
		{"expired certificate", "old", nil, func(*ClientConf) {},
			q("sallyport: device certificate (tls.cert "+oldCrt+") expired on 2021-01-01 00:00 UTC, ") + `\d+ days ago` +
				q(" (valid from 2020-01-01 00:00 UTC to 2021-01-01 00:00 UTC): ask your admin for a new one")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cc := clientConf(k, tt.device, "wireguard", shortTempDir(t))
			conf := filepath.Join(t.TempDir(), "acme.toml")
			asNobody := len(tt.wrap) > 1 && tt.wrap[1] == nobody[1]
			if asNobody {
				cc.Cert, cc.Key, cc.CA = filepath.Join(home, filepath.Base(crt)), filepath.Join(home, filepath.Base(key)), filepath.Join(home, filepath.Base(k.CA()))
				conf = filepath.Join(home, strings.ReplaceAll(tt.name, " ", "-")+".toml")
			}
			tt.edit(&cc)
			render(t, clientTmpl, cc, conf)
			if asNobody {
				if err := os.Chown(conf, 65534, 65534); err != nil {
					t.Fatal(err)
				}
			}
			p := tp.start(tp.Lap, "client", nil, append(tt.wrap, nobodyBin, "up", "-c", conf)...)
			if !p.Wait(10 * time.Second) {
				t.Fatal("client did not exit")
			}
			if p.ExitCode() != 1 {
				t.Fatalf("client exited %d, want 1:\n%s", p.ExitCode(), p.Log())
			}
			// Log lines before the failure (where the device key lives)
			// are slog lines; the error is the one plain line.
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(p.Err()), "\n") {
				if !strings.HasPrefix(l, "time=") {
					lines = append(lines, l)
				}
			}
			if got := strings.Join(lines, "\n"); !regexp.MustCompile("^" + tt.want + "$").MatchString(got) {
				t.Fatalf("stderr:\n%s\nwant exactly:\n%s", got, tt.want)
			}
		})
	}
}
