package ca

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/pki"
)

func TestParseKeyType(t *testing.T) {
	for in, want := range map[string]KeyType{"": KeyECDSA, "p256": KeyECDSA, "ecdsa": KeyECDSA, "ed25519": KeyEd25519, "rsa": KeyRSA3072, "rsa3072": KeyRSA3072} {
		if got, err := ParseKeyType(in); err != nil || got != want {
			t.Errorf("ParseKeyType(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseKeyType("dsa"); err == nil {
		t.Error("dsa accepted")
	}
}

func TestKeyRoundTrip(t *testing.T) {
	for _, kt := range []KeyType{KeyECDSA, KeyEd25519} {
		k, err := GenerateKey(kt)
		if err != nil {
			t.Fatal(err)
		}
		pemKey, err := EncodeKey(k)
		if err != nil || !strings.Contains(string(pemKey), "BEGIN PRIVATE KEY") {
			t.Fatalf("encode %s: %v", kt, err)
		}
		back, err := pki.ParseKey(pemKey)
		if err != nil || !publicKeyEqual(back.Public(), k.Public()) {
			t.Errorf("round trip %s: %v", kt, err)
		}
	}
	for _, bad := range []string{"", "junk", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"} {
		if _, err := pki.ParseKey([]byte(bad)); err == nil {
			t.Errorf("pki.ParseKey(%q) accepted", bad)
		}
	}
}

func TestKeyWriteAndPerms(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k")
	if err := atomicfile.Write(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(p, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "two" {
		t.Errorf("content %q", b)
	}
	if err := pki.CheckCAKeyPerm(p); err != nil {
		t.Errorf("0600 refused: %v", err)
	}
	os.Chmod(p, 0o640)
	if err := pki.CheckCAKeyPerm(p); err == nil || !strings.Contains(err.Error(), "chmod 600 "+p) {
		t.Errorf("0640: %v", err)
	}
	if err := pki.CheckCAKeyPerm(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing key accepted")
	}
	if err := atomicfile.Write(filepath.Join(dir, "no", "such"), nil, 0o600); err == nil {
		t.Error("write into missing dir succeeded")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("leftover files: %v", ents)
	}
}

func TestRecordStatus(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	r := Record{NotBefore: now.AddDate(0, 0, -1), NotAfter: now.AddDate(1, 0, 0)}
	for _, tt := range []struct {
		r    Record
		want string
	}{
		{r, "valid"},
		{Record{NotBefore: r.NotBefore, NotAfter: now.AddDate(0, 0, 5).Add(time.Hour)}, "expires in 5d"},
		{Record{NotBefore: r.NotBefore, NotAfter: now.Add(-time.Second)}, "expired"},
		{Record{NotBefore: now.Add(time.Hour), NotAfter: r.NotAfter}, "not yet valid"},
		{Record{NotBefore: r.NotBefore, NotAfter: r.NotAfter, RevokedAt: now}, "revoked"},
	} {
		if got := tt.r.Status(now); got != tt.want {
			t.Errorf("status %q want %q", got, tt.want)
		}
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"alice-laptop", "a", "vpn.example.com", "bob_1@corp"} {
		if err := ValidName("device", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".hidden", "../x", "a/b", "a b", "a..b", strings.Repeat("x", 65), "-flag"} {
		if err := ValidName("device", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
