package ca

import (
	"os/exec"
	"strings"
	"testing"
)

// TestRunTimeDoesNotLinkCA guards the package split: the gateway and the
// laptop (and everything they are built from, tests included) use only the
// run-time package pki; the CA is linked only by the pki command line. The
// gateway also links pki/renew, its online issuer, which can only re-issue
// a verified identity and imports nothing of ours but pki; the laptop and
// everything else at run time link no signing code at all.
func TestRunTimeDoesNotLinkCA(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list package dependencies: %v", err)
	}
	const mod = "github.com/sallyport/sallyport/"
	pkgs := []string{mod + "server/...", mod + "client/...", mod + "tunnel/...", mod + "internal/...", mod + "pki"}
	out, err := exec.Command(goBin, append([]string{"list", "-deps", "-test", "-f", "{{.ImportPath}} {{join .Imports \" \"}}"}, pkgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 10 {
		t.Fatalf("go list listed only %d packages; the check would prove nothing:\n%s", len(lines), out)
	}
	sawRenew := false
	for _, l := range lines {
		f := strings.Fields(l)
		pkg := strings.TrimSuffix(f[0], "_test")
		for _, imp := range f[1:] {
			if imp == mod+"pki/ca" || strings.HasPrefix(imp, mod+"pki/ca/") || imp == mod+"pki/pkicmd" {
				t.Errorf("%s imports %s: the gateway and laptop must not link the CA (see ARCHITECTURE.md)", f[0], imp)
			}
			if imp == mod+"pki/renew" {
				sawRenew = true
				if pkg != mod+"server" && !strings.HasPrefix(f[0], mod+"server [") {
					t.Errorf("%s imports %s: only the gateway (server) may link the online issuer (see ARCHITECTURE.md)", f[0], imp)
				}
			}
			if pkg == mod+"pki/renew" && strings.HasPrefix(imp, mod) && imp != mod+"pki" {
				t.Errorf("pki/renew imports %s: the online issuer imports nothing of ours but pki (see ARCHITECTURE.md)", imp)
			}
		}
	}
	if !sawRenew {
		t.Errorf("no run-time package imports pki/renew: the check of who links the online issuer would prove nothing")
	}
}
