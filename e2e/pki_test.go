package e2e

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"slices"
	"testing"
	"time"
)

func loadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s: no CERTIFICATE PEM block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

func loadCRL(t *testing.T, path string) *x509.RevocationList {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if blk, _ := pem.Decode(b); blk != nil {
		b = blk.Bytes
	}
	crl, err := x509.ParseRevocationList(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return crl
}

// TestPKICLI drives `sallyport pki` the way the other e2e tests and the
// demo do and checks the files against the PKI layout contract.
func TestPKICLI(t *testing.T) {
	requireBin(t)
	t.Parallel()
	k := newPKI(t, "Test CA")
	k.ServerCert(gwName, "--ip", gwAddr)
	k.Issue("alice", []string{"eng", "ops"})
	k.Issue("old", []string{"eng"}, "--not-before", "2020-01-01T00:00:00Z", "--not-after", "2020-01-02T00:00:00Z")
	k.ServerCert("laptop-x")

	ca := loadCert(t, k.CA())
	if !ca.IsCA {
		t.Errorf("ca.crt is not a CA certificate")
	}
	for _, f := range []string{"root.crt", "root.key", "crl.pem", "index.db"} {
		if _, err := os.Stat(k.path(f)); err != nil {
			t.Errorf("layout: %v", err)
		}
	}
	if fi, err := os.Stat(k.path("root.key")); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("root.key mode %v, want 0600", fi.Mode().Perm())
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)

	crt, key := k.Device("alice")
	a := loadCert(t, crt)
	if a.Subject.CommonName != "alice" || !slices.Equal(a.Subject.OrganizationalUnit, []string{"eng", "ops"}) {
		t.Errorf("alice subject %v, want CN=alice OU=[eng ops]", a.Subject)
	}
	if !slices.Equal(a.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("alice EKU %v, want clientAuth only", a.ExtKeyUsage)
	}
	if _, err := a.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("alice does not verify against ca.crt: %v", err)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("device key %s: %v mode %v", key, err, fi.Mode())
	}

	scrt, _ := k.Server(gwName)
	s := loadCert(t, scrt)
	if _, err := s.Verify(x509.VerifyOptions{Roots: roots, DNSName: gwName}); err != nil {
		t.Errorf("gateway cert does not verify for %s: %v", gwName, err)
	}
	if err := s.VerifyHostname(gwAddr); err != nil {
		t.Errorf("gateway cert lacks IP SAN %s: %v", gwAddr, err)
	}
	if slices.Contains(s.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("gateway cert has clientAuth; the bad-eku test relies on serverAuth only")
	}

	oc, _ := k.Device("old")
	o := loadCert(t, oc)
	if !o.NotAfter.Equal(time.Date(2020, 1, 2, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("expired cert NotAfter %v", o.NotAfter)
	}

	if n := len(loadCRL(t, k.CRL()).RevokedCertificateEntries); n != 0 {
		t.Errorf("fresh CRL lists %d revocations", n)
	}
	k.Revoke("alice")
	crl := loadCRL(t, k.CRL())
	if err := crl.CheckSignatureFrom(ca); err != nil {
		t.Errorf("CRL not signed by the CA: %v", err)
	}
	found := false
	for _, e := range crl.RevokedCertificateEntries {
		found = found || e.SerialNumber.Cmp(a.SerialNumber) == 0
	}
	if !found {
		t.Errorf("revoked alice (serial %x) missing from crl.pem", a.SerialNumber)
	}
}
