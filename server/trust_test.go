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
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/server/policy"
	"github.com/sallyport/sallyport/tunnel"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t testing.TB, name string) *testCA {
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

// sign issues tmpl (with a fresh P-256 key) under ca; missing serial and
// validity are filled in.
func (ca *testCA) sign(t *testing.T, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

// intermediate makes an issuing CA under ca.
func (ca *testCA) intermediate(t *testing.T, name string, serial int64, notAfter time.Time) *testCA {
	t.Helper()
	c, key := ca.sign(t, &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, NotAfter: notAfter,
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign})
	return &testCA{c, key}
}

// crlAt signs a CRL with the given number and nextUpdate.
func (ca *testCA) crlAt(t *testing.T, number int64, next time.Time, serials ...int64) *pki.RevocationList {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: big.NewInt(s), RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(number), ThisUpdate: time.Now().Add(-2 * time.Hour), NextUpdate: next,
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

func trustFor(set *policy.Set, cas ...*x509.Certificate) trust {
	return trust{caCerts: cas, caPool: pki.NewPool(cas), caDigest: digestCerts(cas), policies: set, allowFP: map[string]bool{}, crlStale: CRLStaleRefuse}
}

// TestTrustDecide is what a thief with a stolen or crafted certificate
// would try, against the one trust decision.
func TestTrustDecide(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	other := newTestCA(t, "Other CA")
	set, err := policy.Compile([]policy.Policy{{Name: "eng", Match: policy.Match{OU: []string{"eng"}}, Allow: []string{"192.168.77.0/24"}}})
	if err != nil {
		t.Fatal(err)
	}
	device := func(issuer *testCA, cn string, serial int64, tmpl x509.Certificate) *x509.Certificate {
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.Subject = pkix.Name{CommonName: cn, OrganizationalUnit: []string{"eng"}}
		if tmpl.ExtKeyUsage == nil && tmpl.UnknownExtKeyUsage == nil && !tmpl.IsCA {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		c, _ := issuer.sign(t, &tmpl)
		return c
	}
	alice := device(ca, "alice", 10, x509.Certificate{})
	bob := ca.issue(t, "bob", 11, []string{"eng"}, time.Now().Add(time.Hour), x509.ExtKeyUsageClientAuth)
	sales := ca.issue(t, "carol", 12, []string{"sales"}, time.Now().Add(time.Hour), x509.ExtKeyUsageClientAuth)
	soon := ca.issue(t, "dave", 13, []string{"eng"}, time.Now().Add(time.Minute), x509.ExtKeyUsageClientAuth)
	noEKU := func() *x509.Certificate { // a leaf without the EKU extension at all
		c, _ := ca.sign(t, &x509.Certificate{SerialNumber: big.NewInt(14), Subject: pkix.Name{CommonName: "noeku", OrganizationalUnit: []string{"eng"}},
			KeyUsage: x509.KeyUsageDigitalSignature})
		return c
	}()
	anyEKU := device(ca, "anyeku", 15, x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	serverOnly := device(ca, "srv", 16, x509.Certificate{ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	caLeaf := device(ca, "sub-ca", 17, x509.Certificate{IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	foreign := device(other, "alice", 10, x509.Certificate{})
	inter := ca.intermediate(t, "Issuing CA", 40, time.Now().Add(24*time.Hour))
	underInter := device(inter, "erin", 41, x509.Certificate{})
	shortInter := ca.intermediate(t, "Short CA", 42, time.Now().Add(time.Minute))
	underShort := device(shortInter, "frank", 43, x509.Certificate{})

	srvCA := func() *testCA {
		c, key := ca.sign(t, &x509.Certificate{SerialNumber: big.NewInt(44), Subject: pkix.Name{CommonName: "TLS servers CA"},
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
		return &testCA{c, key}
	}()
	underSrvCA := device(srvCA, "gina", 45, x509.Certificate{})
	// Issued in the CA's first hour, expired since (validity in the past).
	ancient := device(ca, "old", 46, x509.Certificate{NotBefore: time.Now().Add(-50 * time.Minute), NotAfter: time.Now().Add(-40 * time.Minute)})
	foreignAncient := device(other, "old", 47, x509.Certificate{NotBefore: time.Now().Add(-50 * time.Minute), NotAfter: time.Now().Add(-40 * time.Minute)})

	base := trustFor(set, ca.cert)
	withCRL := base
	withCRL.crl = ca.crlAt(t, 2, time.Now().Add(time.Hour), 11)
	interRevoked := base
	interRevoked.crl = ca.crlAt(t, 3, time.Now().Add(time.Hour), 40)
	stale := base
	stale.crl = ca.crlAt(t, 4, time.Now().Add(-time.Minute))
	staleWarn := stale
	staleWarn.crlStale = CRLStaleWarn
	anyOK := base
	anyOK.anyEKU = true
	allowlisted := base
	allowlisted.allowFP = map[string]bool{pki.Fingerprint(alice): true}
	bySubject := base
	bySubject.allowSubj = []string{"CN=carol,*", "CN=bob,OU=eng", "*,UID=dave"}
	// The user is matched as UID=dave, as `pki show` prints the subject,
	// not as 0.9.2342.19200300.100.1.1=#1304...
	dave, _ := ca.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "dave-laptop", OrganizationalUnit: []string{"eng"},
		ExtraNames: []pkix.AttributeTypeAndValue{{Type: pki.OIDUserID, Value: "dave"}}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature})
	swapped := trustFor(set, other.cert) // client_ca replaced by another CA

	now := time.Now()
	tests := []struct {
		name   string
		tr     trust
		peer   []*x509.Certificate
		at     time.Time
		why    purpose
		reason tunnel.Reason
	}{
		{"allowed", base, []*x509.Certificate{alice}, now, forNewSession, ""},
		{"no certificate", base, nil, now, forNewSession, tunnel.ReasonNoCert},
		{"another CA, same name", base, []*x509.Certificate{foreign}, now, forNewSession, tunnel.ReasonUnknownCA},
		{"CA removed on reload", swapped, []*x509.Certificate{alice}, now, forRecheck, tunnel.ReasonUnknownCA},
		{"no EKU extension", base, []*x509.Certificate{noEKU}, now, forNewSession, tunnel.ReasonBadEKU},
		{"anyExtendedKeyUsage", base, []*x509.Certificate{anyEKU}, now, forNewSession, tunnel.ReasonBadEKU},
		{"no EKU with accept_any_eku", anyOK, []*x509.Certificate{noEKU}, now, forNewSession, ""},
		{"anyEKU with accept_any_eku", anyOK, []*x509.Certificate{anyEKU}, now, forNewSession, ""},
		{"serverAuth only", anyOK, []*x509.Certificate{serverOnly}, now, forNewSession, tunnel.ReasonBadEKU},
		{"under a CA restricted to serverAuth", base, []*x509.Certificate{underSrvCA, srvCA.cert}, now, forNewSession, tunnel.ReasonBadEKU},
		{"expired long ago", base, []*x509.Certificate{ancient}, now, forNewSession, tunnel.ReasonExpired},
		{"expired, another CA", base, []*x509.Certificate{foreignAncient}, now, forNewSession, tunnel.ReasonUnknownCA},
		{"leaf marked CA:TRUE", base, []*x509.Certificate{caLeaf}, now, forNewSession, tunnel.ReasonCALeaf},
		{"no policy", base, []*x509.Certificate{sales}, now, forNewSession, tunnel.ReasonNoPolicy},
		{"revoked", withCRL, []*x509.Certificate{bob}, now, forNewSession, tunnel.ReasonRevoked},
		{"revoked on re-check", withCRL, []*x509.Certificate{bob}, now, forRecheck, tunnel.ReasonRevoked},
		{"not revoked", withCRL, []*x509.Certificate{alice}, now, forNewSession, ""},
		{"via intermediate", base, []*x509.Certificate{underInter, inter.cert}, now, forNewSession, ""},
		{"intermediate not sent", base, []*x509.Certificate{underInter}, now, forNewSession, tunnel.ReasonUnknownCA},
		{"intermediate revoked", interRevoked, []*x509.Certificate{underInter, inter.cert}, now, forNewSession, tunnel.ReasonRevoked},
		{"intermediate expired since", base, []*x509.Certificate{underShort, shortInter.cert}, now.Add(2 * time.Minute), forRecheck, tunnel.ReasonExpired},
		{"expired since handshake", base, []*x509.Certificate{soon}, now.Add(2 * time.Minute), forRecheck, tunnel.ReasonExpired},
		{"not yet valid", base, []*x509.Certificate{alice}, now.Add(-2 * time.Hour), forNewSession, tunnel.ReasonExpired},
		{"stale CRL refuses new sessions", stale, []*x509.Certificate{alice}, now, forNewSession, tunnel.ReasonCRLStale},
		{"stale CRL keeps live sessions", stale, []*x509.Certificate{alice}, now, forRecheck, ""},
		{"stale CRL in warn mode", staleWarn, []*x509.Certificate{alice}, now, forNewSession, ""},
		{"fingerprint allowlist hit", allowlisted, []*x509.Certificate{alice}, now, forNewSession, ""},
		{"fingerprint allowlist miss", allowlisted, []*x509.Certificate{bob}, now, forNewSession, tunnel.ReasonNotAllowlisted},
		{"subject allowlist hit", bySubject, []*x509.Certificate{bob}, now, forNewSession, ""},
		{"subject allowlist then policy", bySubject, []*x509.Certificate{sales}, now, forNewSession, tunnel.ReasonNoPolicy},
		{"subject allowlist by UID", bySubject, []*x509.Certificate{dave}, now, forNewSession, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var prev *verdict
			if tt.why == forRecheck && len(tt.peer) > 0 {
				// A live session: admitted earlier under the original CA.
				v, err := base.decide(tt.peer, nil, time.Now(), forNewSession)
				if err != nil {
					t.Fatalf("setup: %v", err)
				}
				prev = &v
			}
			v, err := tt.tr.decide(tt.peer, prev, tt.at, tt.why)
			if tt.reason == "" {
				if err != nil || v.grant == nil || v.id.Device != tt.peer[0].Subject.CommonName {
					t.Fatalf("want allowed, got %v (grant %v)", err, v.grant)
				}
				return
			}
			if err == nil {
				t.Fatalf("want %s, got admitted", tt.reason)
			}
			if r := classify(err); r.reason != tt.reason {
				t.Fatalf("want %s, got %v", tt.reason, err)
			}
		})
	}
}

// TestCRLReload: a reload may not go back to an older CRL, and removing
// tls.crl keeps the CRL in force.
func TestCRLReload(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	dir := t.TempDir()
	writeCRL := func(number int64, serials ...int64) string {
		var entries []x509.RevocationListEntry
		for _, s := range serials {
			entries = append(entries, x509.RevocationListEntry{SerialNumber: big.NewInt(s), RevocationTime: time.Now()})
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: time.Now(),
			NextUpdate: time.Now().Add(time.Hour), RevokedCertificateEntries: entries}, ca.cert, ca.key)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, fmt.Sprintf("crl-%d.pem", number))
		writePEM(t, p, "X509 CRL", der)
		return p
	}
	gw := ca.leafWithKey(t, "gw.test", nil, x509.ExtKeyUsageServerAuth, "gw.test")
	writePEM(t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", ca.cert.Raw)
	writePEM(t, filepath.Join(dir, "gw.crt"), "CERTIFICATE", gw.Certificate[0])
	keyDER, _ := x509.MarshalPKCS8PrivateKey(gw.PrivateKey)
	writePEM(t, filepath.Join(dir, "gw.key"), "PRIVATE KEY", keyDER)
	cfg := func(crl string) *Config {
		c := &Config{Path: filepath.Join(dir, "server.toml"),
			TLS:      TLSConfig{Cert: filepath.Join(dir, "gw.crt"), Key: filepath.Join(dir, "gw.key"), ClientCA: filepath.Join(dir, "ca.crt"), CRL: crl},
			Tunnel:   TunnelConfig{IPv4Pool: "10.8.0.0/24"},
			Policies: []policy.Policy{{Name: "all", Match: policy.Match{CN: []string{"*"}}, Allow: []string{"10.0.0.0/8"}}}}
		if err := c.normalize(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	newer := writeCRL(7, 11)
	older := writeCRL(6)
	cur, err := loadTrust(cfg(newer), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := loadTrust(cfg(older), cur); err == nil || !strings.Contains(err.Error(), "lower than") {
		t.Fatalf("older CRL accepted on reload: %v", err)
	}
	same, err := loadTrust(cfg(writeCRL(7, 11, 12)), cur)
	if err != nil {
		t.Fatalf("same CRL number refused: %v", err)
	}
	if same.crl.Len() != 2 {
		t.Fatalf("reloaded CRL has %d entries", same.crl.Len())
	}
	dropped, err := loadTrust(cfg(""), cur)
	if err != nil {
		t.Fatal(err)
	}
	bob := ca.issue(t, "bob", 11, nil, time.Now().Add(time.Hour), x509.ExtKeyUsageClientAuth)
	if revoked, _ := dropped.crl.Revoked(bob); !revoked || len(dropped.warnings) != 1 {
		t.Fatalf("removing tls.crl turned revocation off (warnings %q)", dropped.warnings)
	}
	if fresh, err := loadTrust(cfg(""), nil); err != nil || fresh.crl != nil {
		t.Fatalf("a start without tls.crl: %v", err)
	}
}

// TestGatewayKeyMode: the gateway refuses a key group or others can read,
// as the laptop does.
func TestGatewayKeyMode(t *testing.T) {
	h := newGatewayHarness(t, []policy.Policy{{Name: "all", Match: policy.Match{CN: []string{"*"}}, Allow: []string{"10.0.0.0/8"}}}, netip.Prefix{})
	defer h.close()
	c := h.s.config()
	if err := os.Chmod(c.TLS.Key, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := New(c, h.s.log); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("gateway started with a group-readable key: %v", err)
	}
}

// fakeAlert stands for crypto/tls's unexported alert type (a uint8).
type fakeAlert uint8

func (a fakeAlert) Error() string { return "tls: alert" }

func TestClassify(t *testing.T) {
	ca := newTestCA(t, "Other CA")
	leaf := ca.issue(t, "mallory", 5, nil, time.Now().Add(time.Hour), x509.ExtKeyUsageClientAuth)
	tests := []struct {
		err    error
		reason tunnel.Reason
		device string
	}{
		{&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{Cert: leaf}}, tunnel.ReasonUnknownCA, "mallory"},
		{&tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Cert: leaf, Reason: x509.Expired}}, tunnel.ReasonExpired, "mallory"},
		{&tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Cert: leaf, Reason: x509.IncompatibleUsage}}, tunnel.ReasonBadEKU, "mallory"},
		{errors.New("tls: client didn't provide a certificate"), tunnel.ReasonNoCert, "-"},
		{fmt.Errorf("wrapped: %w", &refusal{tunnel.ReasonRevoked, "bob", errors.New("x")}), tunnel.ReasonRevoked, "bob"},
		{errors.New("tls: client offered only unsupported versions"), tunnel.ReasonHandshake, "-"},
		// A certificate alert from the device is about the gateway's own.
		{&net.OpError{Op: "remote error", Err: fakeAlert(42)}, tunnel.ReasonGatewayCert, "-"},
		{&net.OpError{Op: "remote error", Err: fakeAlert(48)}, tunnel.ReasonGatewayCert, "-"},
		{&net.OpError{Op: "remote error", Err: fakeAlert(40)}, tunnel.ReasonHandshake, "-"}, // handshake_failure
	}
	for _, tt := range tests {
		r := classify(tt.err)
		if r.reason != tt.reason || r.device != tt.device {
			t.Errorf("classify(%v) = %s/%s, want %s/%s", tt.err, r.reason, r.device, tt.reason, tt.device)
		}
	}
}

// TestTrustRequiresHardwareKey: a policy with require_hardware_key admits
// only devices whose certificate's issuer recorded a TPM or token key; a
// matching device without it is refused outright (not merely left without
// that policy), a certificate naming two origins counts as none, and
// policies that do not demand it are unaffected.
func TestTrustRequiresHardwareKey(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	set, err := policy.Compile([]policy.Policy{
		{Name: "eng", Match: policy.Match{OU: []string{"eng"}}, Allow: []string{"192.168.77.0/24"}, RequireHardwareKey: true},
		{Name: "everyone-dns", Match: policy.Match{CN: []string{"*"}}, Allow: []string{"192.168.77.53 udp/53"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tpm, _ := pki.KeyOriginPolicy(pki.KeyOriginTPM)
	token, _ := pki.KeyOriginPolicy(pki.KeyOriginPKCS11)
	other, _ := x509.ParseOID("1.3.6.1.4.1.32473.115.112.3.99")
	device := func(cn, ou string, serial int64, origins ...x509.OID) *x509.Certificate {
		c, _ := ca.sign(t, &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{ou}},
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Policies: origins})
		return c
	}
	tr := trustFor(set, ca.cert)
	for _, tt := range []struct {
		name   string
		cert   *x509.Certificate
		reason tunnel.Reason
	}{
		{"eng, key in the TPM", device("a", "eng", 20, tpm), ""},
		{"eng, key in a token", device("b", "eng", 21, token), ""},
		{"eng, key file", device("c", "eng", 22), tunnel.ReasonHardwareKey},
		{"eng, two origins", device("d", "eng", 23, tpm, token), tunnel.ReasonHardwareKey},
		{"eng, another policy OID of our arc", device("e", "eng", 24, other), tunnel.ReasonHardwareKey},
		{"sales, key file", device("f", "sales", 25), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			v, err := tr.decide([]*x509.Certificate{tt.cert}, nil, time.Now(), forNewSession)
			if tt.reason == "" {
				if err != nil || v.grant == nil {
					t.Fatalf("want admitted, got %v", err)
				}
				return
			}
			if err == nil || classify(err).reason != tt.reason || v.grant != nil {
				t.Fatalf("want %s, got %v (grant %v)", tt.reason, err, v.grant)
			}
			if !strings.Contains(err.Error(), `policy "eng" requires a hardware-held device key`) {
				t.Errorf("log line %q does not name the policy", err)
			}
		})
	}
}

// TestHardwareKeyGate: policy explain/test count the hardware-key rule in
// their verdict the way the gateway does.
func TestHardwareKeyGate(t *testing.T) {
	set, err := policy.Compile([]policy.Policy{
		{Name: "eng", Match: policy.Match{OU: []string{"eng"}}, Allow: []string{"10.0.0.0/8"}, RequireHardwareKey: true},
		{Name: "sales", Match: policy.Match{OU: []string{"sales"}}, Allow: []string{"10.0.0.0/8"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	gate := hardwareKeyGate(set)
	for _, tt := range []struct {
		id     pki.Identity
		ok     bool
		inLine string
	}{
		{pki.Identity{Device: "a", Groups: []string{"eng"}, KeyOrigin: pki.KeyOriginTPM}, true, "records a key in tpm"},
		{pki.Identity{Device: "b", Groups: []string{"eng"}}, false, "hardware-key-required"},
		{pki.Identity{Device: "c", Groups: []string{"sales"}}, true, "not required"},
	} {
		g := gate(tt.id, nil)
		if g.OK != tt.ok || !strings.Contains(g.Line, tt.inLine) {
			t.Errorf("%s: %+v, want ok %v and %q", tt.id.Device, g, tt.ok, tt.inLine)
		}
	}
}

// TestAdmissionGatesHaveHardwareKey: the gates policy explain and test
// run include the hardware-key rule.
func TestAdmissionGatesHaveHardwareKey(t *testing.T) {
	cfg := &Config{Policies: []policy.Policy{{Name: "eng", Match: policy.Match{OU: []string{"eng"}}, Allow: []string{"10.0.0.0/8"}, RequireHardwareKey: true}}}
	gates, err := AdmissionGates(cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	refused := false
	for _, g := range gates {
		if r := g(pki.Identity{Device: "b", Groups: []string{"eng"}}, nil); !r.OK && strings.Contains(r.Line, "hardware-key-required") {
			refused = true
		}
	}
	if !refused {
		t.Fatal("no admission gate refuses a key-file device under require_hardware_key")
	}
}

// TestTrustDecideEdges: what the table above leaves to chance.
func TestTrustDecideEdges(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	other := newTestCA(t, "Other CA")
	set, err := policy.Compile([]policy.Policy{{Name: "eng", Match: policy.Match{OU: []string{"eng"}}, Allow: []string{"192.168.77.0/24"}}})
	if err != nil {
		t.Fatal(err)
	}
	base := trustFor(set, ca.cert)
	now := time.Now()

	// A previous verdict under the same CAs but without a verified chain
	// (say, one a refusal left behind) never stands in for verification.
	foreign := other.issue(t, "alice", 10, []string{"eng"}, now.Add(time.Hour), x509.ExtKeyUsageClientAuth)
	if _, err := base.decide([]*x509.Certificate{foreign}, &verdict{caDigest: base.caDigest}, now, forRecheck); err == nil || classify(err).reason != tunnel.ReasonUnknownCA {
		t.Fatalf("a chainless previous verdict admitted a foreign certificate: %v", err)
	}

	// The refusal says which certificate of the chain expired.
	short := ca.intermediate(t, "Short CA", 40, now.Add(time.Minute))
	under := short.issue(t, "frank", 41, []string{"eng"}, now.Add(time.Hour), x509.ExtKeyUsageClientAuth)
	v, err := base.decide([]*x509.Certificate{under, short.cert}, nil, now, forNewSession)
	if err != nil {
		t.Fatal(err)
	}
	_, err = base.decide([]*x509.Certificate{under, short.cert}, &v, now.Add(2*time.Minute), forRecheck)
	if err == nil || !strings.Contains(err.Error(), `issuing CA "Short CA" valid`) {
		t.Fatalf("expired intermediate: %v", err)
	}
	soon := ca.issue(t, "dave", 42, []string{"eng"}, now.Add(time.Minute), x509.ExtKeyUsageClientAuth)
	v, err = base.decide([]*x509.Certificate{soon}, nil, now, forNewSession)
	if err != nil {
		t.Fatal(err)
	}
	_, err = base.decide([]*x509.Certificate{soon}, &v, now.Add(2*time.Minute), forRecheck)
	if err == nil || !strings.HasPrefix(strings.TrimPrefix(err.Error(), "expired: "), "certificate valid") {
		t.Fatalf("expired leaf: %v", err)
	}

	// A revoked certificate is named as the leaf or as the issuing CA.
	inter := ca.intermediate(t, "Issuing CA", 50, now.Add(time.Hour))
	erin := inter.issue(t, "erin", 51, []string{"eng"}, now.Add(time.Hour), x509.ExtKeyUsageClientAuth)
	revokedInter := base
	revokedInter.crl = ca.crlAt(t, 5, now.Add(time.Hour), 50)
	if _, err := revokedInter.decide([]*x509.Certificate{erin, inter.cert}, nil, now, forNewSession); err == nil ||
		!strings.Contains(err.Error(), `issuing CA "Issuing CA" (serial`) {
		t.Fatalf("revoked intermediate: %v", err)
	}
	revokedLeaf := base
	revokedLeaf.crl = ca.crlAt(t, 6, now.Add(time.Hour), 42)
	if _, err := revokedLeaf.decide([]*x509.Certificate{soon}, nil, now, forNewSession); err == nil ||
		!strings.Contains(err.Error(), "revoked: certificate serial ") {
		t.Fatalf("revoked leaf: %v", err)
	}

	// With CRLs of several issuers in force, the number shown is the highest.
	multi := base
	multi.crl = crlOf(t, ca.crlDER(t, 7), other.crlDER(t, 3), ca.cert, other.cert)
	if n := multi.crlNumber(); n == nil || n.Int64() != 7 {
		t.Fatalf("crlNumber = %v, want 7", n)
	}
	multi.crl = crlOf(t, ca.crlDER(t, 2), other.crlDER(t, 9), ca.cert, other.cert)
	if n := multi.crlNumber(); n == nil || n.Int64() != 9 {
		t.Fatalf("crlNumber = %v, want 9", n)
	}
	if n := base.crlNumber(); n != nil {
		t.Fatalf("crlNumber without a CRL = %v", n)
	}
}

// crlDER is a CRL of ca with the given number, PEM-encoded.
func (ca *testCA) crlDER(t *testing.T, number int64) []byte {
	t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(number), ThisUpdate: time.Now().Add(-time.Hour), NextUpdate: time.Now().Add(time.Hour),
	}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

// crlOf parses two PEM CRLs as one file, verified against cas.
func crlOf(t *testing.T, a, b []byte, cas ...*x509.Certificate) *pki.RevocationList {
	t.Helper()
	r, err := pki.ParseCRL(append(append([]byte(nil), a...), b...), cas)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestCertificateGate: policy explain/test of a CA certificate (ca.crt
// given for a device's) is denied with the gateway's reason ca-leaf, even
// under a policy that matches every name, and says it is a CA certificate;
// a device certificate and an identity without one pass the gate.
func TestCertificateGate(t *testing.T) {
	ca := newTestCA(t, "Acme CA")
	alice := ca.issue(t, "alice", 2, []string{"eng"}, time.Now().Add(time.Hour), x509.ExtKeyUsageClientAuth)
	cfg := &Config{Policies: []policy.Policy{{Name: "all", Match: policy.Match{CN: []string{"*"}}, Allow: []string{"10.0.0.0/8"}}}}
	gates, err := AdmissionGates(cfg, "")
	if err != nil {
		t.Fatal(err)
	}
	set, err := policy.Compile(cfg.Policies)
	if err != nil {
		t.Fatal(err)
	}
	dst, _ := policy.ParseDestination("10.0.0.5:22/tcp")
	for _, tt := range []struct {
		name  string
		certs []*x509.Certificate
		want  string
		line  string
	}{
		{"CA certificate", []*x509.Certificate{ca.cert}, "deny", "certificate: refused, the gateway answers ca-leaf: certificate is a CA certificate (basicConstraints CA:TRUE), not a device certificate"},
		{"device certificate", []*x509.Certificate{alice, ca.cert}, "allow", "certificate: a device certificate"},
		{"no certificate", nil, "allow", "certificate: not checked"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			id := pki.Identity{Device: "alice"}
			if tt.certs != nil {
				id = pki.IdentityOf(tt.certs[0])
			}
			e := set.Explain(id, tt.certs, dst, gates...)
			if out := e.Format(); e.Verdict() != tt.want || !strings.Contains(out, tt.line) {
				t.Errorf("verdict %s, want %s and %q in\n%s", e.Verdict(), tt.want, tt.line, out)
			}
		})
	}
}
