package cli

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/client"
)

// sp runs sallyport with args and fails t unless it exits with code.
func sp(t *testing.T, code int, args ...string) (stdout, stderr string) {
	t.Helper()
	c, out, errs := run(args...)
	if c != code {
		t.Fatalf("sallyport %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), c, code, out, errs)
	}
	return out, errs
}

// TestPKIToGatewayFlow walks what an admin does on day one, through the
// command tree only: a CA, a gateway certificate, two laptops, a bundle,
// a server.toml that `server check` accepts, its policies explained and
// tested, then a revocation.
func TestPKIToGatewayFlow(t *testing.T) {
	dir := t.TempDir()
	d := filepath.Join(dir, "pki")
	sp(t, 0, "pki", "init", "--dir", d, "--name", "Acme CA", "--intermediate", "--key", "ed25519")
	if _, errs := sp(t, 1, "pki", "init", "--dir", d); !strings.Contains(errs, "refusing to overwrite") {
		t.Errorf("second init: %s", errs)
	}
	sp(t, 0, "pki", "server", "--dir", d, "--name", "vpn.example.com", "--ip", "127.0.0.1", "--key", "ed25519")
	sp(t, 0, "pki", "issue", "--dir", d, "--device", "alice", "--user", "alice", "--group", "eng", "--key", "ed25519")
	sp(t, 0, "pki", "issue", "--dir", d, "--device", "carol", "--group", "sales", "--key", "ed25519")
	if _, errs := sp(t, 1, "pki", "issue", "--dir", d, "--device", "alice"); !strings.Contains(errs, "already has a valid certificate") {
		t.Errorf("second certificate for alice: %s", errs)
	}
	sp(t, 2, "pki", "issue", "--dir", d) // no --device
	out, _ := sp(t, 0, "pki", "list", "--dir", d)
	for _, w := range []string{"alice", "carol", "vpn.example.com"} {
		if !strings.Contains(out, w) {
			t.Errorf("pki list lacks %s:\n%s", w, out)
		}
	}

	bundle := filepath.Join(dir, "alice.toml")
	sp(t, 0, "pki", "bundle", "--dir", d, "--device", "alice", "--server", "vpn.example.com:8443", "-o", bundle)
	if fi, err := os.Stat(bundle); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("bundle file: %v %v", fi, err)
	}
	cc, err := client.LoadConfig(bundle)
	if err != nil {
		t.Fatalf("the bundle is not a client config: %v", err)
	}
	if cc.Server != "vpn.example.com:8443" || cc.ServerName != "vpn.example.com" {
		t.Errorf("bundle server %q name %q", cc.Server, cc.ServerName)
	}

	conf := filepath.Join(dir, "server.toml")
	writeFile(t, conf, `listen = "127.0.0.1:8443"
[tls]
cert = "pki/servers/vpn.example.com.crt"
key = "pki/servers/vpn.example.com.key"
client_ca = "pki/ca.crt"
crl = "pki/crl.pem"
[tunnel]
ipv4_pool = "10.8.0.0/24"
[[policy]]
name = "engineering"
match = { ou = ["eng"] }
allow = ["192.168.77.0/24 tcp/22"]
[[policy]]
name = "everyone-dns"
match = { cn = ["*"] }
allow = ["192.168.77.53 udp/53"]
`)
	out, _ = sp(t, 0, "server", "check", "-c", conf)
	if !strings.Contains(out, conf+": ok (2 policies: engineering, everyone-dns; ") || !strings.Contains(out, "CRL number") {
		t.Errorf("server check:\n%s", out)
	}

	alice, carol := filepath.Join(d, "devices", "alice.crt"), filepath.Join(d, "devices", "carol.crt")
	for _, tt := range []struct {
		code int
		args []string
		want string
	}{
		{0, []string{"--cert", alice, "192.168.77.5:22/tcp"}, "engineering"},
		{1, []string{"--cert", carol, "192.168.77.5:22/tcp"}, "carol"},
		{0, []string{"--device", "bob", "--ou", "eng", "192.168.77.9:22/tcp"}, "bob"},
		{1, []string{"--device", "bob", "--ou", "eng", "192.168.77.9:80/tcp"}, "bob"},
		{0, []string{"--device", "carol", "192.168.77.53:53/udp"}, "everyone-dns"},
		{2, []string{"192.168.77.5"}, "--cert FILE or --device NAME"},
		{2, []string{"--cert", alice, "--device", "x", "192.168.77.5"}, "--cert FILE or --device NAME"},
		{2, []string{"--cert", alice, "--ou", "eng", "192.168.77.5"}, "not with --cert"},
		{2, []string{"--device", "x", "nowhere:22/tcp"}, "policy explain"},
		{2, []string{"--cert", filepath.Join(dir, "none.crt"), "192.168.77.5"}, "none.crt"}, // an error, not a deny
		{0, []string{"--cert", alice, "192.168.77.5"}, "allowed by rule"},                   // bare address: some traffic
		{1, []string{"--cert", carol, "192.168.77.5"}, "verdict: deny"},
		{0, []string{"--cert", alice, "192.168.77.53"}, "revocation: not revoked (CRL "},
		{0, []string{"--device", "bob", "--ou", "eng", "192.168.77.53"}, "revocation: not checked: no certificate"},
		{0, []string{"--device", "bob", "--ou", "eng", "192.168.77.53"}, "allowlist: none"},
	} {
		out, errs := sp(t, tt.code, append([]string{"policy", "explain", "-c", conf}, tt.args...)...)
		if !strings.Contains(out+errs, tt.want) {
			t.Errorf("policy explain %q: no %q in\n%s%s", tt.args, tt.want, out, errs)
		}
	}
	if _, errs := sp(t, 2, "policy", "explain", "-c", filepath.Join(dir, "none.toml"), "--device", "x", "10.0.0.1"); !strings.Contains(errs, "none.toml") {
		t.Errorf("explain with a missing config: %s", errs)
	}

	cases := filepath.Join(dir, "cases.toml")
	writeFile(t, cases, `[[case]]
name = "alice reaches ssh"
cert = "pki/devices/alice.crt"
dst = "192.168.77.5:22/tcp"
want = "allow"
policies = ["engineering", "everyone-dns"]
[[case]]
name = "carol does not"
device = "carol"
ou = ["sales"]
dst = "192.168.77.5:22/tcp"
want = "deny"
`)
	out, _ = sp(t, 0, "policy", "test", "-c", conf, cases)
	if !strings.Contains(out, "alice reaches ssh") || !strings.Contains(out, "carol does not") {
		t.Errorf("policy test:\n%s", out)
	}
	wrong := filepath.Join(dir, "wrong.toml")
	writeFile(t, wrong, "[[case]]\nname = \"carol reaches ssh\"\ndevice = \"carol\"\ndst = \"192.168.77.5:22/tcp\"\nwant = \"allow\"\n")
	if out, _ = sp(t, 1, "policy", "test", "-c", conf, wrong); !strings.Contains(out, "carol reaches ssh") {
		t.Errorf("failing policy test:\n%s", out)
	}
	sp(t, 2, "policy", "test", "-c", conf, filepath.Join(dir, "no-cases.toml"))
	sp(t, 2, "policy", "test", "-c", conf)
	missing := filepath.Join(dir, "missing-cert.toml")
	writeFile(t, missing, "[[case]]\ncert = \"nowhere.crt\"\ndst = \"192.168.77.5:22/tcp\"\nwant = \"deny\"\n")
	if out, _ = sp(t, 2, "policy", "test", "-c", conf, missing); !strings.Contains(out, "nowhere.crt") { // "must deny" cannot pass on a wrong path
		t.Errorf("policy test with a missing certificate:\n%s", out)
	}

	// Revoke alice: the CRL the gateway loads lists her; the config still checks.
	sp(t, 0, "pki", "revoke", "--dir", d, "--device", "alice", "--reason", "keyCompromise")
	out, _ = sp(t, 0, "pki", "list", "--dir", d)
	if !strings.Contains(out, "revoked") {
		t.Errorf("pki list after revoke:\n%s", out)
	}
	sp(t, 0, "pki", "crl", "--dir", d)
	sp(t, 0, "server", "check", "-c", conf)
	// The CRL the config names is part of the verdict: alice is denied now.
	if out, _ = sp(t, 1, "policy", "explain", "-c", conf, "--cert", alice, "192.168.77.5:22/tcp"); !strings.Contains(out, "allowed by rule") ||
		!strings.Contains(out, "revocation: refused, the gateway answers revoked") {
		t.Errorf("explain of a revoked device:\n%s", out)
	}
	if out, _ = sp(t, 1, "policy", "test", "-c", conf, cases); !strings.Contains(out, "because revocation: refused") {
		t.Errorf("policy test of a revoked device:\n%s", out)
	}
	// --crl names another CRL; one that does not load is an error.
	sp(t, 2, "policy", "explain", "-c", conf, "--crl", filepath.Join(dir, "none.pem"), "--cert", alice, "192.168.77.5:22/tcp")
	if _, errs := sp(t, 1, "pki", "bundle", "--dir", d, "--device", "alice", "--server", "vpn.example.com"); !strings.Contains(errs, "no valid certificate") {
		t.Errorf("bundle of a revoked device: %s", errs)
	}

	// A gateway key others can read fails the check, naming the fix.
	os.Chmod(filepath.Join(d, "servers", "vpn.example.com.key"), 0o644)
	if _, errs := sp(t, 1, "server", "check", "-c", conf); !strings.Contains(errs, "chmod") {
		t.Errorf("server check with a world-readable key: %s", errs)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestUserPathsBounded: every file a command line or a config names is
// read only if it is a regular file under its cap. /dev/zero, a FIFO with
// no writer, a directory and a huge (sparse) file each get one error naming
// the path, at once: no hang, no growing to gigabytes.
func TestUserPathsBounded(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge")
	if err := os.WriteFile(huge, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, 1<<30); err != nil { // sparse: costs no disk
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "subdir")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "server.toml")
	writeFile(t, conf, "[tls]\ncert = \"gw.crt\"\nkey = \"gw.key\"\nclient_ca = \"ca.crt\"\n[tunnel]\nipv4_pool = \"10.8.0.0/24\"\n"+
		"[[policy]]\nname = \"all\"\nmatch = { cn = [\"*\"] }\nallow = [\"10.0.0.0/8\"]\n")
	for _, bad := range []struct{ path, words string }{
		{"/dev/zero", "not a regular file (a character device)"},
		{fifo, "not a regular file (a FIFO)"},
		{sub, "not a regular file (a directory)"},
		{huge, "file too large"},
	} {
		for _, args := range [][]string{
			{"server", "check", "-c", bad.path},
			{"policy", "explain", "-c", bad.path, "--device", "x", "10.0.0.1"},
			{"policy", "explain", "-c", conf, "--cert", bad.path, "10.0.0.1"},
			{"policy", "test", "-c", conf, bad.path},
		} {
			type result struct {
				code      int
				out, errs string
			}
			done := make(chan result, 1)
			go func() { c, o, e := run(args...); done <- result{c, o, e} }()
			var r result
			select {
			case r = <-done:
			case <-time.After(time.Minute):
				t.Fatalf("sallyport %s hung", strings.Join(args, " "))
			}
			if r.code == 0 || !strings.Contains(r.errs, bad.path) || !strings.Contains(r.errs, bad.words) {
				t.Errorf("sallyport %s: exit %d, stderr %q; want an error naming %s and %q", strings.Join(args, " "), r.code, r.errs, bad.path, bad.words)
			}
		}
	}
}

// TestPolicyExplainAllowlist: the allowlists are part of the verdict, on a
// line of their own, with the gateway's reason.
func TestPolicyExplainAllowlist(t *testing.T) {
	dir := t.TempDir()
	d := filepath.Join(dir, "pki")
	sp(t, 0, "pki", "init", "--dir", d, "--name", "Acme CA", "--key", "ed25519")
	sp(t, 0, "pki", "issue", "--dir", d, "--device", "alice", "--group", "eng", "--key", "ed25519")
	sp(t, 0, "pki", "issue", "--dir", d, "--device", "mallory", "--group", "eng", "--key", "ed25519")
	conf := filepath.Join(dir, "server.toml")
	writeFile(t, conf, `[tls]
cert = "gw.crt"
key = "gw.key"
client_ca = "pki/ca.crt"
allow_subjects = ["CN=alice,*"]
[tunnel]
ipv4_pool = "10.8.0.0/24"
[[policy]]
name = "engineering"
match = { ou = ["eng"] }
allow = ["192.168.77.0/24"]
`)
	out, _ := sp(t, 0, "policy", "explain", "-c", conf, "--cert", filepath.Join(d, "devices", "alice.crt"), "192.168.77.5:22/tcp")
	if !strings.Contains(out, "allowlist: passes") {
		t.Errorf("alice:\n%s", out)
	}
	out, _ = sp(t, 1, "policy", "explain", "-c", conf, "--cert", filepath.Join(d, "devices", "mallory.crt"), "192.168.77.5:22/tcp")
	if !strings.Contains(out, "allowed by rule") || !strings.Contains(out, "allowlist: refused, the gateway answers not-allowlisted") || !strings.Contains(out, "verdict: deny") {
		t.Errorf("mallory:\n%s", out)
	}
}

// TestPolicyExplainCACert: the CA's certificate given where a device's
// belongs is said to be a CA certificate and denied (exit 1, the verdict
// the gateway gives it: ca-leaf), even under a policy matching every name;
// a case file can keep "the CA certificate never gets in" as a case.
func TestPolicyExplainCACert(t *testing.T) {
	dir := t.TempDir()
	d := filepath.Join(dir, "pki")
	sp(t, 0, "pki", "init", "--dir", d, "--name", "Acme CA", "--key", "ed25519")
	conf := filepath.Join(dir, "server.toml")
	writeFile(t, conf, `[tls]
cert = "gw.crt"
key = "gw.key"
client_ca = "pki/ca.crt"
[tunnel]
ipv4_pool = "10.8.0.0/24"
[[policy]]
name = "everyone"
match = { cn = ["*"] }
allow = ["192.168.77.0/24"]
`)
	caCrt := filepath.Join(d, "ca.crt")
	out, _ := sp(t, 1, "policy", "explain", "-c", conf, "--cert", caCrt, "192.168.77.5:22/tcp")
	for _, w := range []string{
		caCrt + " is a CA certificate, not a device certificate",
		"certificate: refused, the gateway answers ca-leaf",
		"verdict: deny",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("explain of ca.crt lacks %q:\n%s", w, out)
		}
	}
	cases := filepath.Join(d, "cases.toml")
	writeFile(t, cases, "[[case]]\nname = \"the CA certificate is no device\"\ncert = \"ca.crt\"\ndst = \"192.168.77.5:22/tcp\"\nwant = \"deny\"\n")
	if out, _ = sp(t, 0, "policy", "test", "-c", conf, cases); !strings.Contains(out, "the CA certificate is no device") {
		t.Errorf("policy test:\n%s", out)
	}
}
