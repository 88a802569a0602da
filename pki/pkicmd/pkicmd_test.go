package pkicmd

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/spf13/cobra"

	"github.com/sallyport/sallyport/internal/cmdutil"
	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/ca"
)

// run invokes the CLI like "sallyport pki ARGS" and returns exit code and output.
func run(t testing.TB, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func mustRun(t testing.TB, args ...string) string {
	t.Helper()
	code, out, errs := run(t, args...)
	if code != 0 {
		t.Fatalf("pki %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func newPKI(t testing.TB, extra ...string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	mustRun(t, append([]string{"init", "--dir", dir, "--name", "Test CA"}, extra...)...)
	return dir
}

var serialRE = regexp.MustCompile(`(?m)^serial: ([0-9a-f]+)$`)

func issue(t testing.TB, dir string, args ...string) string {
	t.Helper()
	out := mustRun(t, append([]string{"issue", "--dir", dir}, args...)...)
	m := serialRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no serial in %q", out)
	}
	return m[1]
}

func loadLeaf(t testing.TB, path string) []*x509.Certificate {
	t.Helper()
	certs, err := pki.LoadCertificates(path)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

func mode(t testing.TB, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestHelp(t *testing.T) {
	code, out, _ := run(t, "--help")
	if code != 0 || !strings.Contains(out, "Example") || !strings.Contains(out, "revoke") {
		t.Fatalf("top help: %d %q", code, out)
	}
	if code, _, errs := run(t); code != 2 || !strings.Contains(errs, "Usage") {
		t.Errorf("no args: %d", code)
	}
	if code, _, errs := run(t, "frobnicate"); code != 2 || !strings.Contains(errs, "unknown command") {
		t.Errorf("unknown command: %d %q", code, errs)
	}
	for _, name := range order {
		for _, h := range []string{"--help", "-h"} {
			code, out, _ := run(t, name, h)
			if code != 0 || !strings.Contains(out, "Examples:") || !strings.Contains(out, "sallyport pki "+name) || !strings.Contains(out, "-dir") {
				t.Errorf("%s %s: %d %q", name, h, code, out)
			}
		}
	}
	// The gateway watches its CRL file and reloads by itself: help that
	// tells the admin to reload or restart it sends them on a needless
	// errand (and makes them think a revocation waits for it).
	for _, name := range []string{"revoke", "crl"} {
		_, out, _ := run(t, name, "--help")
		for _, bad := range []string{"Reload the gateway", "systemctl reload", "restart the gateway"} {
			if strings.Contains(out, bad) {
				t.Errorf("%s --help says %q; the gateway re-reads its CRL by itself:\n%s", name, bad, out)
			}
		}
		if !strings.Contains(out, "by itself") {
			t.Errorf("%s --help does not say the gateway picks up the CRL by itself:\n%s", name, out)
		}
	}
	if code, out, _ := run(t, "help", "issue"); code != 0 || !strings.Contains(out, "--device") {
		t.Errorf("help issue: %d", code)
	}
	if code, _, errs := run(t, "issue", "--bogus"); code != 2 || !strings.Contains(errs, "bogus") {
		t.Errorf("bad flag: %d %q", code, errs)
	}
}

func TestInit(t *testing.T) {
	for _, tt := range []struct {
		name  string
		args  []string
		inter bool
	}{
		{"ecdsa", nil, false},
		{"ed25519-intermediate", []string{"--key", "ed25519", "--intermediate"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := newPKI(t, tt.args...)
			if m := mode(t, dir); m != 0o700 {
				t.Errorf("dir mode %o", m)
			}
			keys := []string{"root.key"}
			if tt.inter {
				keys = append(keys, "intermediate.key")
			}
			for _, k := range keys {
				if m := mode(t, filepath.Join(dir, k)); m != 0o600 {
					t.Errorf("%s mode %o", k, m)
				}
			}
			bundle := loadLeaf(t, filepath.Join(dir, "ca.crt"))
			if len(bundle) != map[bool]int{false: 1, true: 2}[tt.inter] || !bundle[0].IsCA {
				t.Errorf("ca.crt has %d certs", len(bundle))
			}
			if _, err := pki.LoadCRL(filepath.Join(dir, "crl.pem"), bundle); err != nil {
				t.Errorf("initial CRL: %v", err)
			}
			// Refuse to overwrite.
			before, _ := os.ReadFile(filepath.Join(dir, "root.key"))
			code, _, errs := run(t, "init", "--dir", dir)
			after, _ := os.ReadFile(filepath.Join(dir, "root.key"))
			if code != 1 || !strings.Contains(errs, "refusing to overwrite") || !bytes.Equal(before, after) {
				t.Errorf("re-init: %d %q", code, errs)
			}
		})
	}
	if code, _, _ := run(t, "init", "--dir", t.TempDir()+"/x", "--key", "dsa"); code != 2 {
		t.Errorf("bad key type: exit %d", code)
	}
	if code, _, errs := run(t, "issue", "--dir", t.TempDir(), "--device", "a"); code != 1 || !strings.Contains(errs, "pki init") {
		t.Errorf("issue without CA: %d %q", code, errs)
	}
}

func TestIssueDevice(t *testing.T) {
	for _, inter := range []bool{false, true} {
		t.Run(fmt.Sprint("intermediate=", inter), func(t *testing.T) {
			var args []string
			if inter {
				args = []string{"--intermediate"}
			}
			dir := newPKI(t, args...)
			out := mustRun(t, "issue", "--dir", dir, "--device", "alice-laptop", "--user", "alice", "--group", "eng", "--group", "ops,sre", "--days", "30")
			if !strings.Contains(out, "fingerprint: ") {
				t.Errorf("output %q", out)
			}
			crt, key := filepath.Join(dir, "devices", "alice-laptop.crt"), filepath.Join(dir, "devices", "alice-laptop.key")
			if m := mode(t, key); m != 0o600 {
				t.Errorf("key mode %o", m)
			}
			if _, err := tls.LoadX509KeyPair(crt, key); err != nil {
				t.Fatalf("tls.LoadX509KeyPair: %v", err)
			}
			certs := loadLeaf(t, crt)
			if len(certs) != map[bool]int{false: 1, true: 2}[inter] {
				t.Fatalf("chain length %d", len(certs))
			}
			leaf := certs[0]
			id := pki.IdentityOf(leaf)
			if id.Device != "alice-laptop" || id.User != "alice" || strings.Join(id.Groups, ",") != "eng,ops,sre" {
				t.Errorf("identity %+v", id)
			}
			if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || leaf.IsCA || len(leaf.UnknownExtKeyUsage) != 0 {
				t.Errorf("EKU %v CA %v", leaf.ExtKeyUsage, leaf.IsCA)
			}
			if leaf.SerialNumber.BitLen() < 128 {
				t.Errorf("serial only %d bits", leaf.SerialNumber.BitLen())
			}
			if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 30*24*time.Hour || d > 31*24*time.Hour {
				t.Errorf("lifetime %v", d)
			}
			if !strings.Contains(out, "serial: "+id.Serial) || !strings.Contains(out, id.Fingerprint) {
				t.Errorf("serial/fingerprint not printed: %q", out)
			}
			roots := loadLeaf(t, filepath.Join(dir, "root.crt"))
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pki.NewPool(roots), Intermediates: pki.NewPool(certs[1:]), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("chain: %v", err)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pki.NewPool(roots), Intermediates: pki.NewPool(certs[1:]), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
				t.Error("device cert verified for serverAuth")
			}
			// Same device again while valid: refused.
			if code, _, errs := run(t, "issue", "--dir", dir, "--device", "alice-laptop"); code != 1 || !strings.Contains(errs, "already has a valid certificate") {
				t.Errorf("duplicate: %d %q", code, errs)
			}
			// Validity clamped to the issuer's.
			code, out, errs := run(t, "issue", "--dir", dir, "--device", "long", "--days", "100000")
			issuer := certs[len(certs)-1]
			if !inter {
				issuer = roots[0]
			}
			if code != 0 || !strings.Contains(errs, "shortened") || !loadLeaf(t, filepath.Join(dir, "devices", "long.crt"))[0].NotAfter.Equal(issuer.NotAfter) {
				t.Errorf("clamp: %d %q %q", code, out, errs)
			}
			if code, _, errs := run(t, "issue", "--dir", dir, "--device", "past", "--not-after", issuer.NotAfter.Add(time.Hour).Format(time.RFC3339)); code != 1 || !strings.Contains(errs, "past the issuing CA") {
				t.Errorf("not-after past issuer: %d %q", code, errs)
			}
		})
	}
}

func TestIssueRefusals(t *testing.T) {
	dir := newPKI(t)
	for _, tt := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"issue"}, 2, "--device is required"},
		{[]string{"issue", "--device", "../etc"}, 1, "invalid device name"},
		{[]string{"issue", "--device", "a b"}, 1, "invalid device name"},
		{[]string{"issue", "--device", "x", "--not-before", "yesterday"}, 2, "RFC 3339"},
		{[]string{"issue", "--device", "x", "--not-before", "2030-01-02T00:00:00Z", "--not-after", "2030-01-01T00:00:00Z"}, 1, "not after"},
		{[]string{"issue", "--device", "x", "--group", ""}, 2, "empty"},
		{[]string{"issue", "--device", "x", "stray"}, 2, "unexpected argument"},
		{[]string{"server"}, 2, "--name is required"},
		{[]string{"server", "--name", "vpn", "--ip", "nope"}, 2, "not an IP"},
	} {
		code, _, errs := run(t, append(tt.args, "--dir", dir)...)
		if code != tt.code || !strings.Contains(errs, tt.msg) {
			t.Errorf("%v: exit %d %q, want %d %q", tt.args, code, errs, tt.code, tt.msg)
		}
	}
}

func TestKeyPermissions(t *testing.T) {
	dir := newPKI(t, "--intermediate")
	key := filepath.Join(dir, "intermediate.key")
	for _, m := range []os.FileMode{0o640, 0o604, 0o644} {
		os.Chmod(key, m)
		for _, args := range [][]string{
			{"issue", "--device", "x"}, {"server", "--name", "vpn"}, {"crl"},
		} {
			code, _, errs := run(t, append(args, "--dir", dir)...)
			if code != 1 || !strings.Contains(errs, "chmod 600 "+key) {
				t.Errorf("mode %o %v: %d %q", m, args, code, errs)
			}
		}
	}
	os.Chmod(key, 0o600)
	issue(t, dir, "--device", "x")
}

func TestServer(t *testing.T) {
	dir := newPKI(t, "--intermediate")
	mustRun(t, "server", "--dir", dir, "--name", "vpn.example.com", "--dns", "vpn2.example.com", "--ip", "203.0.113.1", "--ip", "::1")
	crt, key := filepath.Join(dir, "servers", "vpn.example.com.crt"), filepath.Join(dir, "servers", "vpn.example.com.key")
	if _, err := tls.LoadX509KeyPair(crt, key); err != nil {
		t.Fatal(err)
	}
	leaf := loadLeaf(t, crt)[0]
	if strings.Join(leaf.DNSNames, ",") != "vpn.example.com,vpn2.example.com" || len(leaf.IPAddresses) != 2 ||
		len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("server cert: %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.ExtKeyUsage)
	}
	if err := leaf.VerifyHostname("203.0.113.1"); err != nil {
		t.Error(err)
	}
	mustRun(t, "server", "--dir", dir, "--name", "192.0.2.7")
	if ip := loadLeaf(t, filepath.Join(dir, "servers", "192.0.2.7.crt"))[0].IPAddresses; len(ip) != 1 {
		t.Errorf("IP name: %v", ip)
	}
	code, out, _ := run(t, "show", "--dir", dir, crt)
	if code != 0 || !strings.Contains(out, "server certificate: serverAuth") {
		t.Errorf("show server: %d %s", code, out)
	}
	if code, _, _ := run(t, "show", "--dir", dir, "--role", "device", crt); code != 1 {
		t.Errorf("server cert shown as device: %d", code)
	}
}

// evilCSR asks for CA:true, serverAuth, a DNS SAN and extra subject fields.
func evilCSR(t testing.TB, cn string) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	bc, _ := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	eku, _ := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}})
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: cn, OrganizationalUnit: []string{"admins"}, Organization: []string{"Evil"}},
		DNSNames: []string{"vpn.example.com"},
		ExtraExtensions: []pkix.Extension{
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc},
			{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Value: eku},
		},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestCSRAndSign(t *testing.T) {
	dir := newPKI(t, "--intermediate")
	laptop := filepath.Join(t.TempDir(), "laptop")
	out := mustRun(t, "csr", "--dir", laptop, "--device", "bob-laptop", "--key", "ed25519")
	csr := filepath.Join(laptop, "devices", "bob-laptop.csr")
	if !strings.Contains(out, csr) || mode(t, filepath.Join(laptop, "devices", "bob-laptop.key")) != 0o600 {
		t.Fatalf("csr output %q", out)
	}
	if code, _, errs := run(t, "csr", "--dir", laptop, "--device", "bob-laptop"); code != 1 || !strings.Contains(errs, "refusing to overwrite") {
		t.Errorf("csr overwrite: %d %q", code, errs)
	}
	outCrt := filepath.Join(t.TempDir(), "bob.crt")
	mustRun(t, "sign", "--dir", dir, "--csr", csr, "--device", "bob-laptop", "--user", "bob", "--group", "eng", "-o", outCrt)
	if _, err := tls.LoadX509KeyPair(outCrt, filepath.Join(laptop, "devices", "bob-laptop.key")); err != nil {
		t.Fatalf("signed cert does not match the laptop key: %v", err)
	}
	id := pki.IdentityOf(loadLeaf(t, outCrt)[0])
	if id.Device != "bob-laptop" || id.User != "bob" || strings.Join(id.Groups, ",") != "eng" {
		t.Errorf("identity %+v", id)
	}
	// Bundle needs the key, which stayed on the laptop.
	if code, _, errs := run(t, "bundle", "--dir", dir, "--device", "bob-laptop", "--server", "vpn:443"); code != 1 || !strings.Contains(errs, "CSR") {
		t.Errorf("bundle of CSR device: %d %q", code, errs)
	}

	// A CSR asking for CA, serverAuth, SANs and other subject fields gets none of it.
	evil := filepath.Join(t.TempDir(), "evil.csr")
	os.WriteFile(evil, evilCSR(t, "mallory"), 0o644)
	mustRun(t, "sign", "--dir", dir, "--csr", evil, "--device", "mallory")
	leaf := loadLeaf(t, filepath.Join(dir, "devices", "mallory.crt"))[0]
	if leaf.IsCA || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth ||
		len(leaf.DNSNames) != 0 || len(leaf.Subject.OrganizationalUnit) != 0 || len(leaf.Subject.Organization) != 0 {
		t.Errorf("CSR extensions leaked: CA=%v EKU=%v DNS=%v subject=%v", leaf.IsCA, leaf.ExtKeyUsage, leaf.DNSNames, leaf.Subject)
	}
	// --override-cn issues a CSR under another name than its CN.
	mustRun(t, "sign", "--dir", dir, "--csr", evil, "--device", "renamed", "--override-cn")
	if cn := loadLeaf(t, filepath.Join(dir, "devices", "renamed.crt"))[0].Subject.CommonName; cn != "renamed" {
		t.Errorf("CN %q", cn)
	}
	// Refusals: missing flag, garbage, bad signature.
	garbage := filepath.Join(t.TempDir(), "g.csr")
	os.WriteFile(garbage, []byte("not a csr"), 0o644)
	tampered := evilCSR(t, "tamper")
	blk, _ := pem.Decode(tampered)
	blk.Bytes[len(blk.Bytes)-3] ^= 0xff
	tp := filepath.Join(t.TempDir(), "t.csr")
	os.WriteFile(tp, pem.EncodeToMemory(blk), 0o644)
	for _, tt := range []struct {
		args []string
		code int
	}{{[]string{"sign"}, 2}, {[]string{"sign", "--device", "g", "--csr", garbage}, 1}, {[]string{"sign", "--device", "tamper", "--csr", tp}, 1}, {[]string{"sign", "--device", "x", "--csr", "/nonexistent"}, 1}} {
		if code, _, _ := run(t, append(tt.args, "--dir", dir)...); code != tt.code {
			t.Errorf("%v: exit %d want %d", tt.args, code, tt.code)
		}
	}
}

func crlOf(t testing.TB, dir string) *x509.RevocationList {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "crl.pem"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	c, err := x509.ParseRevocationList(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func colonUpper(s string) string {
	if len(s)%2 == 1 {
		s = "0" + s
	}
	var parts []string
	for i := 0; i < len(s); i += 2 {
		parts = append(parts, strings.ToUpper(s[i:i+2]))
	}
	return strings.Join(parts, ":")
}

func TestRevoke(t *testing.T) {
	dir := newPKI(t, "--intermediate")
	serials := map[string]string{}
	for _, d := range []string{"a", "b", "c", "d", "e"} {
		serials[d] = issue(t, dir, "--device", d)
	}
	n, _ := new(big.Int).SetString(serials["c"], 16)
	lastNum := crlOf(t, dir).Number.Int64()
	for _, tt := range []struct {
		name string
		args []string
		dev  string
	}{
		{"colons-upper, flag after", []string{colonUpper(serials["a"]), "--reason", "keyCompromise"}, "a"},
		{"0x, flag before", []string{"--reason", "superseded", "0x" + strings.ToUpper(serials["b"])}, "b"},
		{"plain decimal", []string{n.String()}, "c"},
		{"d: decimal", []string{"d:" + mustBig(serials["d"]).String(), "--reason=cessationOfOperation"}, "d"},
		{"device", []string{"--device", "e", "--reason", "affiliationChanged"}, "e"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out := mustRun(t, append([]string{"revoke", "--dir", dir}, tt.args...)...)
			if !strings.Contains(out, "revoked: device "+tt.dev+" serial "+serials[tt.dev]) {
				t.Errorf("output %q", out)
			}
			crl := crlOf(t, dir)
			if num := crl.Number.Int64(); num <= lastNum {
				t.Errorf("CRL number %d not above %d", num, lastNum)
			} else {
				lastNum = num
			}
			if time.Until(crl.NextUpdate) < 29*24*time.Hour {
				t.Errorf("nextUpdate %v", crl.NextUpdate)
			}
		})
	}
	// Every revocation stays in the CRL, with its reason.
	issuers := loadLeaf(t, filepath.Join(dir, "ca.crt"))
	rl, err := pki.LoadCRL(filepath.Join(dir, "crl.pem"), issuers)
	if err != nil {
		t.Fatal(err)
	}
	for d := range serials {
		leaf := loadLeaf(t, filepath.Join(dir, "devices", d+".crt"))[0]
		if ok, _ := rl.Revoked(leaf); !ok {
			t.Errorf("device %s not in CRL", d)
		}
	}
	if _, reason := rl.Revoked(loadLeaf(t, filepath.Join(dir, "devices", "a.crt"))[0]); reason != "keyCompromise" {
		t.Errorf("reason %q", reason)
	}
	// Idempotent: revoking again keeps the first reason and succeeds.
	out := mustRun(t, "revoke", "--dir", dir, serials["a"], "--reason", "superseded")
	if !strings.Contains(out, "already revoked") || !strings.Contains(out, "keyCompromise") {
		t.Errorf("second revoke: %q", out)
	}
	// Refusals.
	for _, tt := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"revoke"}, 2, "SERIAL or --device"},
		{[]string{"revoke", "abc123", "--device", "a"}, 2, "not both"},
		{[]string{"revoke", "1", "2"}, 2, "one serial"},
		{[]string{"revoke", "deadbeef"}, 1, "not in this PKI's index"},
		{[]string{"revoke", "12345"}, 1, "not in this PKI's index"},
		{[]string{"revoke", "xyz!"}, 1, "unexpected character"},
		{[]string{"revoke", "--device", "nobody"}, 1, "no certificate for device"},
		{[]string{"revoke", serials["a"], "--reason", "bored"}, 1, "unknown revocation reason"},
		{[]string{"revoke", serials["a"], "--reason", "removeFromCRL"}, 1, "permanent"},
	} {
		code, _, errs := run(t, append(tt.args, "--dir", dir)...)
		if code != tt.code || !strings.Contains(errs, tt.msg) {
			t.Errorf("%v: exit %d %q; want %d %q", tt.args, code, errs, tt.code, tt.msg)
		}
	}
	// A device can be issued again once revoked.
	issue(t, dir, "--device", "a")
	// The intermediate was issued by the root: with the root key here, the
	// root's CRL revokes it.
	recs, _ := ca.New(dir).List()
	if code, _, errs := run(t, "revoke", "--dir", dir, recs[0].Serial); code != 0 {
		t.Errorf("revoke intermediate: %d %q", code, errs)
	}
	rl, lerr := ca.New(dir).LoadRevocations()
	if lerr != nil || !revokedCA(rl, recs[0].Serial, dir) {
		t.Errorf("the intermediate is not revoked by the root's CRL: %v", lerr)
	}
}

// revokedCA reports whether the CRL revokes the intermediate of dir.
func revokedCA(rl *pki.RevocationList, serial, dir string) bool {
	certs, err := pki.LoadCertificates(filepath.Join(dir, "intermediate.crt"))
	if err != nil || pki.FormatSerial(certs[0].SerialNumber) != serial {
		return false
	}
	ok, _ := rl.Revoked(certs[0])
	return ok
}

func mustBig(hex string) *big.Int {
	n, _ := new(big.Int).SetString(hex, 16)
	return n
}

func TestCRLCommand(t *testing.T) {
	dir := newPKI(t)
	s := issue(t, dir, "--device", "x")
	ix := filepath.Join(dir, "index.db")
	backup, err := os.ReadFile(ix)
	if err != nil {
		t.Fatal(err)
	}
	mustRun(t, "revoke", "--dir", dir, s)
	n1 := crlOf(t, dir).Number.Int64()
	out := mustRun(t, "crl", "--dir", dir, "--days", "7")
	crl := crlOf(t, dir)
	if crl.Number.Int64() != n1+1 || len(crl.RevokedCertificateEntries) != 1 || !strings.Contains(out, "1 revoked") {
		t.Errorf("crl: number %v entries %d out %q", crl.Number, len(crl.RevokedCertificateEntries), out)
	}
	if d := time.Until(crl.NextUpdate); d < 6*24*time.Hour || d > 8*24*time.Hour {
		t.Errorf("nextUpdate in %v", d)
	}
	// Number never goes backwards even when the index is restored from an
	// old copy (taken before the revocation and both CRLs).
	if err := os.WriteFile(ix, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "crl", "--dir", dir)
	if got := crlOf(t, dir).Number.Int64(); got != n1+2 {
		t.Errorf("CRL number after index rollback: %d, want %d", got, n1+2)
	}
}

func TestList(t *testing.T) {
	dir := newPKI(t)
	now := time.Now().UTC()
	issue(t, dir, "--device", "ok-dev", "--user", "ann", "--group", "eng,ops")
	issue(t, dir, "--device", "old-dev", "--not-before", now.AddDate(0, 0, -10).Format(time.RFC3339), "--not-after", now.AddDate(0, 0, -1).Format(time.RFC3339))
	issue(t, dir, "--device", "soon-dev", "--days", "10")
	issue(t, dir, "--device", "future-dev", "--not-before", now.AddDate(0, 0, 1).Format(time.RFC3339), "--days", "100")
	rev := issue(t, dir, "--device", "gone-dev")
	mustRun(t, "revoke", "--dir", dir, rev)
	mustRun(t, "server", "--dir", dir, "--name", "vpn.example.com")
	out := mustRun(t, "list", "--dir", dir)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 7 || !strings.HasPrefix(lines[0], "SERIAL") {
		t.Fatalf("list:\n%s", out)
	}
	for dev, status := range map[string]string{"ok-dev": "valid", "old-dev": "expired", "soon-dev": "expires in 9d", "future-dev": "not yet valid", "gone-dev": "revoked", "vpn.example.com": "valid"} {
		found := false
		for _, l := range lines {
			if strings.Contains(l, " "+dev+" ") && strings.HasSuffix(l, status) {
				found = true
			}
		}
		if !found {
			t.Errorf("no line for %s with status %q:\n%s", dev, status, out)
		}
	}
	if !strings.Contains(out, "ann") || !strings.Contains(out, "eng,ops") {
		t.Errorf("user/groups missing:\n%s", out)
	}
	if code, _, _ := run(t, "list", "--dir", t.TempDir()); code != 1 {
		t.Errorf("list without CA: %d", code)
	}
}

func TestShow(t *testing.T) {
	dir := newPKI(t, "--intermediate")
	other := newPKI(t)
	now := time.Now().UTC()
	issue(t, dir, "--device", "good")
	issue(t, dir, "--device", "expired", "--not-before", "2020-01-01T00:00:00Z", "--not-after", "2020-06-01T00:00:00Z")
	issue(t, dir, "--device", "future", "--not-before", now.AddDate(0, 0, 2).Format(time.RFC3339), "--days", "30")
	issue(t, dir, "--device", "soon", "--days", "5")
	rev := issue(t, dir, "--device", "revoked")
	mustRun(t, "revoke", "--dir", dir, rev)
	issue(t, other, "--device", "stranger")
	issue(t, other, "--device", "old-stranger", "--not-before", "2020-01-01T00:00:00Z", "--not-after", "2020-06-01T00:00:00Z")
	caLeaf := makeCALeaf(t, dir)

	dev := func(name string) string { return filepath.Join(dir, "devices", name+".crt") }
	for _, tt := range []struct {
		name, file string
		code       int
		want       string
	}{
		{"good", dev("good"), 0, "ok    chain"},
		{"soon warns only", dev("soon"), 0, "expires soon"},
		{"expired", dev("expired"), 1, "expired 2020-06-01"},
		{"expired still chains", dev("expired"), 1, "ok    chain       signed by this PKI"},
		{"expired from other CA", filepath.Join(other, "devices", "old-stranger.crt"), 1, "does not chain"},
		{"not yet valid", dev("future"), 1, "not valid yet"},
		{"revoked", dev("revoked"), 1, "revoked (unspecified)"},
		{"other CA", filepath.Join(other, "devices", "stranger.crt"), 1, "does not chain"},
		{"leaf marked CA", caLeaf, 1, "marked as a CA"},
		{"root itself", filepath.Join(dir, "root.crt"), 0, "root CA certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out, _ := run(t, "show", tt.file, "--dir", dir)
			if code != tt.code || !strings.Contains(out, tt.want) {
				t.Errorf("exit %d want %d; output lacks %q:\n%s", code, tt.code, tt.want, out)
			}
		})
	}
	// Leaf alone (no intermediate in the file) still chains via the PKI's intermediate.
	leafOnly := filepath.Join(t.TempDir(), "leaf.crt")
	os.WriteFile(leafOnly, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: loadLeaf(t, dev("good"))[0].Raw}), 0o644)
	if code, out, _ := run(t, "show", leafOnly, "--dir", dir); code != 0 {
		t.Errorf("leaf only: %d\n%s", code, out)
	}
	// Without a PKI: printed, chain not checked (warning), no failure for a good cert.
	if code, out, _ := run(t, "show", dev("good"), "--dir", t.TempDir()); code != 0 || !strings.Contains(out, "chain not checked") {
		t.Errorf("no PKI: %d\n%s", code, out)
	}
	if code, _, _ := run(t, "show", "--dir", dir); code != 2 {
		t.Errorf("show without file: %d", code)
	}
	if code, _, errs := run(t, "show", filepath.Join(dir, "index.db"), "--dir", dir); code != 1 || !strings.Contains(errs, "CERTIFICATE") {
		t.Errorf("show non-PEM: %d %q", code, errs)
	}
}

// makeCALeaf signs, with the PKI's issuing key, a clientAuth cert that is
// (wrongly) marked as a CA.
func makeCALeaf(t testing.TB, dir string) string {
	t.Helper()
	p := ca.New(dir)
	cp, kp := p.IssuerPaths()
	iss := loadLeaf(t, cp)[0]
	data, _ := os.ReadFile(kp)
	key, err := pki.ParseKey(data)
	if err != nil {
		t.Fatal(err)
	}
	lk, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "sneaky"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, iss, lk.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "sneaky.crt")
	os.WriteFile(path, append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: iss.Raw})...), 0o644)
	return path
}

func TestBundle(t *testing.T) {
	dir := newPKI(t, "--intermediate")
	issue(t, dir, "--device", "alice", "--group", "eng")
	out := mustRun(t, "bundle", "--dir", dir, "--device", "alice", "--server", "vpn.example.com:8443")
	var cfg struct {
		Server     string `toml:"server"`
		ServerName string `toml:"server_name"`
		TLS        struct {
			CAPEM   string `toml:"ca_pem"`
			CertPEM string `toml:"cert_pem"`
			KeyPEM  string `toml:"key_pem"`
		} `toml:"tls"`
		Tunnel struct {
			Device string `toml:"device"`
			Driver string `toml:"driver"`
		} `toml:"tunnel"`
	}
	md, err := toml.Decode(out, &cfg)
	if err != nil {
		t.Fatalf("bundle is not TOML: %v\n%s", err, out)
	}
	if len(md.Undecoded()) != 0 {
		t.Errorf("unexpected keys %v", md.Undecoded())
	}
	if cfg.Server != "vpn.example.com:8443" || cfg.ServerName != "vpn.example.com" || cfg.Tunnel.Device != "" || cfg.Tunnel.Driver != "wireguard" {
		t.Errorf("cfg %+v", cfg)
	}
	if !strings.Contains(out, "ca_pem = \"\"\"\n-----BEGIN CERTIFICATE-----") {
		t.Errorf("ca_pem not a multi-line basic string:\n%s", out)
	}
	pair, err := tls.X509KeyPair([]byte(cfg.TLS.CertPEM), []byte(cfg.TLS.KeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	cas, err := pki.ParseCertificatesPEM([]byte(cfg.TLS.CAPEM))
	if err != nil || len(cas) != 2 {
		t.Fatalf("ca_pem: %d certs, %v", len(cas), err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pki.NewPool(cas[:1]), Intermediates: pki.NewPool(cas[1:]), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("bundle cert does not verify against bundle CA: %v", err)
	}
	// -o writes 0600; default port; server name override.
	o := filepath.Join(t.TempDir(), "alice.toml")
	mustRun(t, "bundle", "--dir", dir, "--device", "alice", "--server", "203.0.113.9", "--server-name", "vpn.example.com", "-o", o)
	if m := mode(t, o); m != 0o600 {
		t.Errorf("bundle mode %o", m)
	}
	data, _ := os.ReadFile(o)
	if !strings.Contains(string(data), `server = "203.0.113.9:443"`) || !strings.Contains(string(data), `server_name = "vpn.example.com"`) {
		t.Errorf("bundle -o:\n%s", data)
	}
	for _, tt := range []struct {
		args []string
		code int
	}{
		{[]string{"bundle", "--device", "alice"}, 2},
		{[]string{"bundle", "--device", "nobody", "--server", "x:1"}, 1},
		{[]string{"bundle", "--device", "alice", "--server", ":1"}, 1},
	} {
		if code, _, _ := run(t, append(tt.args, "--dir", dir)...); code != tt.code {
			t.Errorf("%v: %d want %d", tt.args, code, tt.code)
		}
	}
	mustRun(t, "revoke", "--dir", dir, "--device", "alice")
	if code, _, _ := run(t, "bundle", "--dir", dir, "--device", "alice", "--server", "x:1"); code != 1 {
		t.Errorf("bundle of revoked device: %d", code)
	}
}

func TestConcurrentIssue(t *testing.T) {
	dir := newPKI(t)
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, _, e := run(t, "issue", "--dir", dir, "--device", fmt.Sprintf("dev%d", i)); code != 0 {
				errs <- e
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	recs, err := ca.New(dir).List()
	if err != nil || len(recs) != n {
		t.Fatalf("index has %d records, want %d (%v)", len(recs), n, err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("leftover temp file %s", e.Name())
		}
	}
}

func TestFlagsAnywhere(t *testing.T) {
	for _, tt := range []struct {
		args []string
		pos  string
		r    string
	}{
		{[]string{"S", "--reason", "x"}, "S", "x"},
		{[]string{"--reason", "x", "S"}, "S", "x"},
		{[]string{"--reason=x", "S", "T"}, "S,T", "x"},
		{[]string{"--", "--reason", "x"}, "--reason,x", ""},
		{[]string{"S", "--", "-T"}, "S,-T", ""},
	} {
		c := commands["revoke"]
		fs, _ := c.newFlagSet()
		cc := &cobra.Command{}
		cmdutil.AddGoFlags(cc, fs)
		err := cc.ParseFlags(tt.args)
		pos := cc.Flags().Args()
		if err != nil || strings.Join(pos, ",") != tt.pos || (tt.r != "" && fs.Lookup("reason").Value.String() != tt.r) {
			t.Errorf("%v: pos %v reason %s err %v", tt.args, pos, fs.Lookup("reason").Value, err)
		}
	}
}
