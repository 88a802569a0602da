package cli

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/adminsock"
)

// complete runs the shell completion of args (what bash, zsh and fish call
// through `sallyport __complete ARGS... PARTIAL`) and returns the offered
// values, without the descriptions and the closing directive line.
func complete(t *testing.T, args ...string) []string {
	t.Helper()
	code, out, errs := run(append([]string{"__complete"}, args...)...)
	if code != 0 {
		t.Fatalf("__complete %q: exit %d\n%s%s", args, code, out, errs)
	}
	var vals []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" || strings.HasPrefix(l, ":") {
			continue
		}
		v, _, _ := strings.Cut(l, "\t")
		vals = append(vals, v)
	}
	return vals
}

// TestCompletion: the values a shell offers. Devices for pki revoke and
// bundle come from the CA index (a revoked device is not offered again, a
// serial only while unrevoked); reasons and key types are the ones the
// commands take; server kick offers the devices in session on the running
// gateway; up/status/down offer the laptop's profiles, never the gateway's
// server.toml; and nothing is offered, without an error, where the values
// cannot be read.
func TestCompletion(t *testing.T) {
	dir := t.TempDir()
	d := filepath.Join(dir, "pki")
	sp(t, 0, "pki", "init", "--dir", d, "--key", "ed25519")
	sp(t, 0, "pki", "issue", "--dir", d, "--device", "alice-laptop", "--key", "ed25519")
	sp(t, 0, "pki", "issue", "--dir", d, "--device", "bob-laptop", "--key", "ed25519")
	sp(t, 0, "pki", "revoke", "--dir", d, "--device", "bob-laptop")

	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"pki", "revoke", "--dir", d, "--device", ""}, []string{"alice-laptop"}},
		{[]string{"pki", "bundle", "--dir", d, "--device", ""}, []string{"alice-laptop"}},
		{[]string{"pki", "revoke", "--dir", filepath.Join(dir, "none"), "--device", ""}, nil},
		{[]string{"pki", "init", "--key", ""}, []string{"ecdsa", "ed25519", "rsa3072"}},
		{[]string{"server", "--log-format", ""}, []string{"text", "json"}},
	} {
		if got := complete(t, tt.args...); !slices.Equal(got, tt.want) {
			t.Errorf("complete %q = %q, want %q", tt.args, got, tt.want)
		}
	}
	reasons := complete(t, "pki", "revoke", "--reason", "")
	if !slices.Contains(reasons, "keyCompromise") || !slices.Contains(reasons, "superseded") || slices.Contains(reasons, "removeFromCRL") {
		t.Errorf("reasons %q", reasons)
	}
	serials := complete(t, "pki", "revoke", "--dir", d, "")
	if len(serials) != 1 {
		t.Errorf("unrevoked serials %q, want alice-laptop's only", serials)
	}

	// server kick: the devices in session, from the gateway's status.
	f := newFakeAdmin(t, func(r adminsock.Request) (any, error) { return gwStatus, nil })
	if got := complete(t, "server", "kick", "--socket", f.sock, ""); !slices.Equal(got, []string{"alice-laptop", "kiosk"}) {
		t.Errorf("server kick completes %q", got)
	}
	if got := complete(t, "server", "kick", "--socket", filepath.Join(dir, "none.sock"), ""); len(got) != 0 {
		t.Errorf("server kick with no gateway completes %q", got)
	}
	if got := complete(t, "server", "pprof", "--kind", ""); !slices.Contains(got, "heap") || !slices.Contains(got, "cpu") {
		t.Errorf("pprof kinds %q", got)
	}

	// Profiles: NAME.toml in the profile directory, not server.toml.
	profileDir := t.TempDir()
	t.Setenv("CONFIGURATION_DIRECTORY", profileDir)
	for _, n := range []string{"acme.toml", "lab.toml", "server.toml", "notes.txt"} {
		if err := os.WriteFile(filepath.Join(profileDir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{"up", "status", "down"} {
		want := []string{filepath.Join(profileDir, "acme.toml"), filepath.Join(profileDir, "lab.toml")}
		if got := complete(t, c, "-c", ""); !slices.Equal(got, want) {
			t.Errorf("%s -c completes %q, want %q", c, got, want)
		}
	}
	if got := complete(t, "status", ""); !slices.Equal(got, []string{"acme", "lab"}) {
		t.Errorf("profile names %q", got)
	}
}
