package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseKey(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	sec1, _ := x509.MarshalECPrivateKey(ec)
	for name, tc := range map[string]struct {
		data []byte
		ok   bool
	}{
		"pkcs8 ecdsa":         {pkcs8(ec), true},
		"pkcs8 ed25519":       {pkcs8(ed), true},
		"sec1 after cert":     {append([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...), true},
		"empty":               {nil, false},
		"junk":                {[]byte("junk"), false},
		"truncated pkcs8":     {[]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), false},
		"only a certificate":  {[]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), false},
		"rsa label, ec bytes": {pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: sec1}), false},
	} {
		k, err := ParseKey(tc.data)
		if (err == nil) != tc.ok || (tc.ok && k == nil) {
			t.Errorf("%s: key %v, err %v", name, k, err)
		}
	}
}

func TestCheckKeyPerm(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k")
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckKeyPerm(p); err != nil {
		t.Errorf("0600 refused: %v", err)
	}
	for _, m := range []os.FileMode{0o640, 0o604, 0o660} {
		os.Chmod(p, m)
		if err := CheckKeyPerm(p); err == nil || !strings.Contains(err.Error(), "chmod 600 "+p) {
			t.Errorf("%04o: %v", m, err)
		}
	}
	if err := CheckKeyPerm(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing key accepted")
	}
}

// TestCheckKeyMode is the key-permission rule as a table: owner-only, shared
// with exactly the group sallyport, or a systemd credential; nothing else.
func TestCheckKeyMode(t *testing.T) {
	const cred = "/run/credentials/sallyport-server.service"
	cases := []struct {
		name  string
		path  string
		mode  os.FileMode
		group string
		cred  string
		ok    bool
	}{
		{"owner rw", "/etc/sallyport/k", 0o600, "root", "", true},
		{"owner r", "/etc/sallyport/k", 0o400, "root", "", true},
		{"group sallyport r", "/etc/sallyport/k", 0o640, "sallyport", "", true},
		{"group sallyport r, owner r", "/etc/sallyport/k", 0o440, "sallyport", "", true},
		{"group root r", "/etc/sallyport/k", 0o640, "root", "", false},
		{"group unknown r", "/etc/sallyport/k", 0o640, "", "", false},
		{"group sallyport rw", "/etc/sallyport/k", 0o660, "sallyport", "", false},
		{"group sallyport rx", "/etc/sallyport/k", 0o650, "sallyport", "", false},
		{"group sallyport w only", "/etc/sallyport/k", 0o620, "sallyport", "", false},
		{"others r with sallyport", "/etc/sallyport/k", 0o644, "sallyport", "", false},
		{"others r", "/etc/sallyport/k", 0o604, "root", "", false},
		{"world", "/etc/sallyport/k", 0o666, "root", "", false},
		{"credential 0400", cred + "/server.key", 0o400, "root", cred, true},
		{"credential 0440", cred + "/server.key", 0o440, "root", cred, true},
		{"credential world-readable", cred + "/server.key", 0o444, "root", cred, false},
		{"credential dir unset", cred + "/server.key", 0o440, "root", "", false},
		{"outside credential dir", "/etc/sallyport/k", 0o440, "root", cred, false},
		{"escapes credential dir", cred + "/../other/k", 0o440, "root", cred, false},
		{"credential dir prefix only", cred + "x/k", 0o440, "root", cred, false},
		{"relative credential dir", "creds/k", 0o440, "root", "creds", false},
		{"directory", "/etc/sallyport/k", os.ModeDir | 0o600, "root", "", false},
	}
	for _, c := range cases {
		err := checkKeyMode(c.path, c.mode, c.group, c.cred)
		if (err == nil) != c.ok {
			t.Errorf("%s: mode %v group %q: err %v, want ok=%v", c.name, c.mode, c.group, err, c.ok)
		}
		if err != nil && c.mode.IsRegular() && !strings.Contains(err.Error(), "chmod 600 "+c.path) {
			t.Errorf("%s: error does not give the fix: %v", c.name, err)
		}
	}
}

// TestCheckKeyPermCredentials checks that CheckKeyPerm reads the credentials
// directory from the environment, as systemd sets it.
func TestCheckKeyPermCredentials(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "server.key")
	if err := os.WriteFile(p, []byte("x"), 0o440); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	if err := CheckKeyPerm(p); err == nil && fileGroup(mustStat(t, p)) != KeyGroup {
		t.Error("0440 key outside a credentials directory accepted")
	}
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	if err := CheckKeyPerm(p); err != nil {
		t.Errorf("credential refused: %v", err)
	}
}

func mustStat(t *testing.T, p string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi
}
