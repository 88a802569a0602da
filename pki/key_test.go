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
