package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/client"
	"github.com/sallyport/sallyport/internal/adminsock"
)

// laptopDirs gives the test its own profile and runtime directories (never
// the host's /etc/sallyport and /run/sallyport) and replaces the removal of
// leftovers (which would touch the host's routing and firewall) with a
// recorder of the profiles it was asked for.
func laptopDirs(t *testing.T) (cfgDir, runDir string, cleaned func() []string) {
	t.Helper()
	cfgDir, runDir = t.TempDir(), shortDir(t)
	t.Setenv("CONFIGURATION_DIRECTORY", cfgDir)
	t.Setenv("RUNTIME_DIRECTORY", runDir)
	var mu sync.Mutex
	var asked []string
	removeLeftoversFn = func(cfg *client.Config, _ *slog.Logger) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, cfg.Tunnel.Device+"/"+client.Profile(cfg.Path))
		return 0, nil
	}
	t.Cleanup(func() { removeLeftoversFn = client.RemoveLeftovers })
	return cfgDir, runDir, func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), asked...) }
}

// shortDir is a temp dir short enough for unix socket paths.
func shortDir(t *testing.T) string {
	d, err := os.MkdirTemp("", "spl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// profile writes profile name into dir; socket, if set, is its [admin]
// socket (else the default, named after the profile).
func profile(t *testing.T, dir, name, socket string) string {
	t.Helper()
	text := "server = \"vpn.example.com:443\"\n[tls]\nca = \"ca.crt\"\ncert = \"d.crt\"\nkey = \"d.key\"\n"
	if socket != "" {
		text += fmt.Sprintf("[admin]\nsocket = %q\n", socket)
	}
	path := filepath.Join(dir, name+".toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// fakeClient answers status as the client of profile name would, and down
// by removing its socket (a client removes it last).
func fakeClient(t *testing.T, sock, name, config string) {
	t.Helper()
	var srv *adminsock.Server
	srv, err := adminsock.Listen(sock, func(_ context.Context, r adminsock.Request) (any, error) {
		if r.Cmd == "down" {
			go func() { time.Sleep(20 * time.Millisecond); srv.Close() }()
			return map[string]bool{"down": true}, nil
		}
		return client.Status{Profile: name, Config: config, Connected: true, Server: "vpn.example.com:443", Address: "10.8.0." + fmt.Sprint(len(name)),
			Device: name + "-laptop", CertDaysLeft: 100}, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
}

// TestLaptopProfiles: up, status and down by profile name as wg-quick
// does; status alone shows every profile that is up; down and status of
// nothing up say so and exit 0; status of a profile that is not up exits 3.
func TestLaptopProfiles(t *testing.T) {
	cfgDir, runDir, cleaned := laptopDirs(t)

	// Nothing up yet.
	if code, out, errs := run("status"); code != 0 || out != "no tunnel is up (start one with: sudo sallyport up NAME)\n" || errs != "" {
		t.Errorf("status with nothing up: exit %d, %q, %q", code, out, errs)
	}
	if code, out, _ := run("status", "--json"); code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("status --json with nothing up: exit %d, %q", code, out)
	}
	if code, out, errs := run("down"); code != 0 || out != "no tunnel is up\n" || errs != "" {
		t.Errorf("down with nothing up: exit %d, %q, %q", code, out, errs)
	}

	// acme names its own socket; home is a bundle (socket after the
	// profile, in the runtime directory); work is not running.
	acmeSock := filepath.Join(shortDir(t), "acme.sock")
	acme := profile(t, cfgDir, "acme", acmeSock)
	home := profile(t, cfgDir, "home", "")
	profile(t, cfgDir, "work", "")
	fakeClient(t, acmeSock, "acme", acme)
	fakeClient(t, filepath.Join(runDir, "client-home.sock"), "home", home)

	code, out, errs := run("status")
	out = squeeze(out)
	if code != 0 || errs != "" || !strings.Contains(out, "profile: acme ("+acme+")") || !strings.Contains(out, "profile: home ("+home+")") ||
		strings.Index(out, "acme") > strings.Index(out, "home") || strings.Contains(out, "work") {
		t.Errorf("status across profiles: exit %d\n%s%s", code, out, errs)
	}
	var all []client.Status
	if code, out, _ := run("status", "--json"); code != 0 || json.Unmarshal([]byte(out), &all) != nil || len(all) != 2 || all[0].Profile != "acme" || all[1].Profile != "home" {
		t.Errorf("status --json across profiles: exit %d\n%s", code, out)
	}
	if code, out, _ := run("status", "home"); code != 0 || !strings.Contains(squeeze(out), "state: connected") || strings.Contains(out, "acme") {
		t.Errorf("status home: exit %d\n%s", code, out)
	}
	if code, out, _ := run("status", "work"); code != exitNotUp || out != "work: not up\n" {
		t.Errorf("status of a profile not up: exit %d, %q; want %d", code, out, exitNotUp)
	}
	if code, _, errs := run("status", "nope"); code != 1 || !strings.Contains(errs, `no profile "nope": `+cfgDir+"/nope.toml does not exist (profiles in "+cfgDir+": acme, home, work)") {
		t.Errorf("status of no such profile: exit %d, %q", code, errs)
	}
	if code, _, errs := run("status", "../etc/passwd"); code != 1 || !strings.Contains(errs, "passwd") {
		t.Errorf("status of a path: exit %d, %q", code, errs)
	}
	if code, _, errs := run("status", "acme", "-c", acme); code != 2 || !strings.Contains(errs, "give one of NAME, -c FILE or --socket") {
		t.Errorf("status NAME -c FILE: exit %d, %q", code, errs)
	}

	// down: a name is needed with two up; down of one not up is not an error.
	if code, _, errs := run("down"); code != 2 || !strings.Contains(errs, "2 tunnels are up (acme, home): say which, e.g. sallyport down acme") {
		t.Errorf("down with two up: exit %d, %q", code, errs)
	}
	if code, out, errs := run("down", "work"); code != 0 || out != "work: not up\n" || errs != "" {
		t.Errorf("down of a profile not up: exit %d, %q, %q", code, out, errs)
	}
	if code, out, errs := run("down", "acme"); code != 0 || out != "acme: tunnel down\n" || errs != "" {
		t.Errorf("down acme: exit %d, %q, %q", code, out, errs)
	}
	// Now one is up: down without a name takes it down.
	if code, out, errs := run("down"); code != 0 || out != "home: tunnel down\n" || errs != "" {
		t.Errorf("down of the one up: exit %d, %q, %q", code, out, errs)
	}
	// And with none up, down looks for what crashed clients left: the
	// profiles' and sp0's.
	if code, out, _ := run("down"); code != 0 || out != "no tunnel is up\n" {
		t.Errorf("down with nothing up: exit %d, %q", code, out)
	}
	if got := strings.Join(cleaned(), " "); !strings.Contains(got, "sp%d/work") || !strings.Contains(got, "sp%d/acme") || !strings.Contains(got, "sp0/") {
		t.Errorf("leftovers looked for: %s", got)
	}
}

// TestUpNeedsAProfile: up names the profile or the file, not both, and an
// unknown name lists the profiles there are.
func TestUpNeedsAProfile(t *testing.T) {
	cfgDir, _, _ := laptopDirs(t)
	profile(t, cfgDir, "acme", "")
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"up"}, 2, "up: name a profile (sallyport up NAME reads " + cfgDir + "/NAME.toml) or give -c FILE; profiles: acme"},
		{[]string{"up", "acme", "beta"}, 2, `unexpected argument "beta"`},
		{[]string{"up", "acme", "-c", "x.toml"}, 2, "give a profile NAME or -c FILE, not both"},
		{[]string{"up", "beta"}, 1, `sallyport: no profile "beta": ` + cfgDir + `/beta.toml does not exist (profiles in ` + cfgDir + `: acme)`},
		{[]string{"up", "a b"}, 1, `"a b" is not a profile name`},
		// acme's files do not exist: up got as far as reading them.
		{[]string{"up", "acme"}, 1, "ca.crt"},
	} {
		code, _, errs := run(tt.args...)
		if code != tt.code || !strings.Contains(errs, tt.want) {
			t.Errorf("%q: exit %d, %q; want %d and %q", tt.args, code, errs, tt.code, tt.want)
		}
	}
}

// TestDownWaits: down asks the client to go and waits until its socket is
// gone; a client that refuses is an error.
func TestDownWaits(t *testing.T) {
	laptopDirs(t)
	var fa *fakeAdmin
	fa = newFakeAdmin(t, func(r adminsock.Request) (any, error) {
		if r.Cmd == "down" {
			go func() { time.Sleep(20 * time.Millisecond); os.Remove(fa.sock) }()
		}
		return nil, nil
	})
	code, out, errs := run("down", "--socket", fa.sock)
	if code != 0 || out != "a: tunnel down\n" || errs != "" {
		t.Errorf("down: exit %d, %q, %q", code, out, errs)
	}
	if _, err := os.Stat(fa.sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("down said the tunnel is down before the client removed its socket (%v)", err)
	}
	if r := fa.next(t); r.Cmd != "down" {
		t.Errorf("down sent %+v", r)
	}
	fb := newFakeAdmin(t, func(adminsock.Request) (any, error) { return nil, errors.New("busy") })
	if code, _, errs := run("down", "--socket", fb.sock); code != 1 || errs != "sallyport: busy\n" {
		t.Errorf("down refused by the client: exit %d, %q", code, errs)
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
