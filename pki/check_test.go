package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"
)

// mkLeaf signs a leaf from ca after edit has adjusted the template.
func (ca *testCA) mkLeaf(t *testing.T, serial int64, edit func(*x509.Certificate)) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "dev"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(60 * 24 * time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func TestCheckChain(t *testing.T) {
	ca, other := newTestCA(t, "CA"), newTestCA(t, "Other")
	crl, err := ParseCRL(ca.crl(t, time.Now().Add(time.Hour), big.NewInt(66)), []*x509.Certificate{ca.cert})
	if err != nil {
		t.Fatal(err)
	}
	staleCRL, err := ParseCRL(ca.crl(t, time.Now().Add(time.Second)), []*x509.Certificate{ca.cert})
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute) // staleCRL is stale then; leaves are still valid
	server := func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }
	roots := []*x509.Certificate{ca.cert}
	for _, tc := range []struct {
		name  string
		certs []*x509.Certificate
		o     CheckOptions
		want  []string // "LEVEL check text": a finding with that level and check whose message contains text
		fail  bool
	}{
		{"no input", nil, CheckOptions{}, []string{"FAIL input no certificate"}, true},
		{"good device", []*x509.Certificate{ca.mkLeaf(t, 1, nil)}, CheckOptions{Roots: roots, CRL: crl},
			[]string{"ok validity valid until", "ok chain chains to this PKI's root: dev -> CA", "ok eku device certificate: clientAuth", "ok key ECDSA P-256", "ok revocation not revoked"}, false},
		{"expires soon", []*x509.Certificate{ca.mkLeaf(t, 1, nil)}, CheckOptions{Roots: roots, SoonDays: 90}, []string{"warn validity expires soon"}, false},
		{"no roots", []*x509.Certificate{ca.mkLeaf(t, 1, nil)}, CheckOptions{}, []string{"warn chain no trusted root"}, false},
		{"other CA", []*x509.Certificate{ca.mkLeaf(t, 1, nil)}, CheckOptions{Roots: []*x509.Certificate{other.cert}}, []string{"FAIL chain does not chain"}, true},
		{"expired, still walked", []*x509.Certificate{ca.mkLeaf(t, 1, func(c *x509.Certificate) { c.NotAfter = time.Now().Add(-time.Minute) })}, CheckOptions{Roots: roots},
			[]string{"FAIL validity expired", "ok chain signed by this PKI: dev -> CA"}, true},
		{"not yet valid, wrong root", []*x509.Certificate{ca.mkLeaf(t, 1, func(c *x509.Certificate) { c.NotBefore = time.Now().Add(time.Hour) })}, CheckOptions{Roots: []*x509.Certificate{other.cert}},
			[]string{"FAIL validity not valid yet", "FAIL chain does not chain"}, true},
		{"revoked", []*x509.Certificate{ca.mkLeaf(t, 66, nil)}, CheckOptions{Roots: roots, CRL: crl}, []string{"FAIL revocation revoked (keyCompromise)"}, true},
		{"stale CRL", []*x509.Certificate{ca.mkLeaf(t, 1, nil)}, CheckOptions{Roots: roots, CRL: staleCRL, Now: later}, []string{"warn revocation CRL is stale"}, false},
		{"server as device", []*x509.Certificate{ca.mkLeaf(t, 1, server)}, CheckOptions{Roots: roots, Role: KindDevice}, []string{"FAIL eku a device certificate must have exactly"}, true},
		{"device with both EKUs", []*x509.Certificate{ca.mkLeaf(t, 1, func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
		})}, CheckOptions{Roots: roots, Role: KindDevice}, []string{"FAIL eku a device certificate must have exactly"}, true},
		{"server without SAN", []*x509.Certificate{ca.mkLeaf(t, 1, server)}, CheckOptions{Roots: roots}, []string{"ok eku server certificate: serverAuth", "FAIL san no DNS or IP"}, true},
		{"server with SAN", []*x509.Certificate{ca.mkLeaf(t, 1, func(c *x509.Certificate) { server(c); c.DNSNames = []string{"gw"} })}, CheckOptions{Roots: roots, Role: KindServer}, []string{"ok eku server certificate"}, false},
		{"device asked for server", []*x509.Certificate{ca.mkLeaf(t, 1, nil)}, CheckOptions{Roots: roots, Role: KindServer}, []string{"FAIL eku a server certificate needs"}, true},
		{"any EKU", []*x509.Certificate{ca.mkLeaf(t, 1, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny} })}, CheckOptions{Roots: roots}, []string{"FAIL eku anyExtendedKeyUsage"}, true},
		{"no EKU", []*x509.Certificate{ca.mkLeaf(t, 1, func(c *x509.Certificate) { c.ExtKeyUsage = nil })}, CheckOptions{Roots: roots}, []string{"FAIL eku neither a device"}, true},
		{"CA as leaf", []*x509.Certificate{ca.mkLeaf(t, 1, func(c *x509.Certificate) { c.IsCA, c.BasicConstraintsValid = true, true })}, CheckOptions{Roots: roots}, []string{"FAIL ca leaf certificate (clientAuth) is marked as a CA"}, true},
		{"root CA itself", []*x509.Certificate{ca.cert}, CheckOptions{Roots: roots}, []string{"ok ca root CA certificate"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := CheckChain(tc.certs, tc.o)
			var lines []string
			for _, f := range fs {
				lines = append(lines, f.Level+" "+f.Check+" "+f.Msg)
			}
			all := strings.Join(lines, "\n")
			for _, w := range tc.want {
				p := strings.SplitN(w, " ", 3)
				if !slices.ContainsFunc(fs, func(f Finding) bool { return f.Level == p[0] && f.Check == p[1] && strings.Contains(f.Msg, p[2]) }) {
					t.Errorf("missing %q in:\n%s", w, all)
				}
			}
			if Failed(fs) != tc.fail {
				t.Errorf("Failed = %v, want %v:\n%s", Failed(fs), tc.fail, all)
			}
		})
	}
}
