package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/server/policy"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{c, key}
}

func (ca *testCA) issue(t *testing.T, cn string, serial int64, ous []string, notAfter time.Time, eku x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, OrganizationalUnit: ous},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		ExtKeyUsage: []x509.ExtKeyUsage{eku}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func (ca *testCA) crl(t *testing.T, serials ...int64) *pki.RevocationList {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: big.NewInt(s), RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(2), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour),
		RevokedCertificateEntries: entries,
	}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	r, err := pki.ParseCRL(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), []*x509.Certificate{ca.cert})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestTrustCheck(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	set, err := policy.Compile([]policy.Policy{{Name: "eng", Match: policy.Match{OU: []string{"eng"}}, Allow: []string{"192.168.77.0/24"}}})
	if err != nil {
		t.Fatal(err)
	}
	alice := ca.issue(t, "alice", 10, []string{"eng"}, time.Now().Add(time.Hour), x509.ExtKeyUsageClientAuth)
	bob := ca.issue(t, "bob", 11, []string{"eng"}, time.Now().Add(time.Hour), x509.ExtKeyUsageClientAuth)
	sales := ca.issue(t, "carol", 12, []string{"sales"}, time.Now().Add(time.Hour), x509.ExtKeyUsageClientAuth)
	soon := ca.issue(t, "dave", 13, []string{"eng"}, time.Now().Add(time.Minute), x509.ExtKeyUsageClientAuth)

	base := trust{caCerts: []*x509.Certificate{ca.cert}, policies: set, allowFP: map[string]bool{}}
	withCRL := base
	withCRL.crl = ca.crl(t, 11)
	allowlisted := base
	allowlisted.allowFP = map[string]bool{pki.Fingerprint(alice): true}
	bySubject := base
	bySubject.allowSubj = []string{"CN=carol,*", "CN=bob,OU=eng"}

	tests := []struct {
		name   string
		tr     trust
		cert   *x509.Certificate
		at     time.Time
		reason string
	}{
		{"allowed", base, alice, time.Now(), ""},
		{"no chain", base, nil, time.Now(), reasonNoCert},
		{"no policy", base, sales, time.Now(), reasonNoPolicy},
		{"revoked", withCRL, bob, time.Now(), reasonRevoked},
		{"not revoked", withCRL, alice, time.Now(), ""},
		{"expired since handshake", base, soon, time.Now().Add(2 * time.Minute), reasonExpired},
		{"fingerprint allowlist hit", allowlisted, alice, time.Now(), ""},
		{"fingerprint allowlist miss", allowlisted, bob, time.Now(), reasonNotAllowlisted},
		{"subject allowlist hit", bySubject, bob, time.Now(), ""},
		{"subject allowlist then policy", bySubject, sales, time.Now(), reasonNoPolicy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var chain []*x509.Certificate
			if tt.cert != nil {
				chain = []*x509.Certificate{tt.cert, ca.cert}
			}
			id, g, err := tt.tr.check(chain, tt.at)
			if tt.reason == "" {
				if err != nil || g == nil || id.Device != tt.cert.Subject.CommonName {
					t.Fatalf("want allowed, got %v (grant %v)", err, g)
				}
				return
			}
			if r := classify(err); err == nil || r.reason != tt.reason {
				t.Fatalf("want %s, got %v", tt.reason, err)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	ca := newTestCA(t, "Other CA")
	leaf := ca.issue(t, "mallory", 5, nil, time.Now().Add(time.Hour), x509.ExtKeyUsageClientAuth)
	tests := []struct {
		err    error
		reason string
		device string
	}{
		{&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{Cert: leaf}}, reasonUnknownCA, "mallory"},
		{&tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Cert: leaf, Reason: x509.Expired}}, reasonExpired, "mallory"},
		{&tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Cert: leaf, Reason: x509.IncompatibleUsage}}, reasonBadEKU, "mallory"},
		{errors.New("tls: client didn't provide a certificate"), reasonNoCert, "-"},
		{fmt.Errorf("wrapped: %w", &refusal{reasonRevoked, "bob", errors.New("x")}), reasonRevoked, "bob"},
		{errors.New("tls: client offered only unsupported versions"), reasonHandshake, "-"},
	}
	for _, tt := range tests {
		r := classify(tt.err)
		if r.reason != tt.reason || r.device != tt.device {
			t.Errorf("classify(%v) = %s/%s, want %s/%s", tt.err, r.reason, r.device, tt.reason, tt.device)
		}
	}
}
