package client

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"

	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/tunnel"
)

// renewProfile makes the client's profile a file like `pki bundle`
// writes, with a device certificate of the given lifetime that started
// elapsed ago.
func renewProfile(t *testing.T, life, elapsed time.Duration) func(*testCA, *Config) {
	return func(ca *testCA, cfg *Config) {
		_, certPEM, keyPEM := ca.leaf(t, "alice-laptop", both(deviceLeaf, func(c *x509.Certificate) {
			c.NotBefore = time.Now().Add(-elapsed)
			c.NotAfter = c.NotBefore.Add(life)
			c.Subject.OrganizationalUnit = []string{"eng"}
		}))
		cfg.TLS.CertPEM, cfg.TLS.KeyPEM = string(certPEM), string(keyPEM)
		cfg.Path = filepath.Join(t.TempDir(), "alice.toml")
		text := "# sallyport client config for device \"alice-laptop\".\nserver = \"" + cfg.Server + "\"\nserver_name = \"gw.test\"\n\n[tls]\n" +
			"ca_pem = \"\"\"\n" + string(ca.pem) + "\"\"\"\n# the device's certificate\ncert_pem = \"\"\"\n" + string(certPEM) + "\"\"\"\n" +
			"key_pem = \"\"\"\n" + string(keyPEM) + "\"\"\"\n\n[tunnel]\n# keep this comment\ndriver = \"wireguard\"\n"
		if err := os.WriteFile(cfg.Path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// renewConfig is the config answer of a gateway that offers renewal.
func renewConfig(at float64) tunnel.Config {
	pc := testConfig()
	pc.Caps, pc.RenewAt = []string{tunnel.CapRenew}, at
	return pc
}

// answerRenewal reads the client's renew frame on s and answers it the
// way the gateway does: the same subject, the request's key, from ca.
func answerRenewal(t *testing.T, s *gwConn, ca *testCA, life time.Duration) *x509.Certificate {
	t.Helper()
	c, _ := answerRenewalWith(t, s, ca, life, true)
	return c
}

// answerRenewalWith is answerRenewal; it also returns the request's
// attestation, and sends the CA bundle only when withCAs.
func answerRenewalWith(t *testing.T, s *gwConn, ca *testCA, life time.Duration, withCAs bool) (*x509.Certificate, []byte) {
	t.Helper()
	typ, p := s.next(t)
	if typ != tunnel.FrameRenew {
		t.Fatalf("frame %s, want renew", tunnel.FrameName(typ))
	}
	req, err := tunnel.DecodeRenewRequest(p)
	if err != nil {
		t.Fatal(err)
	}
	binding, _ := pki.RenewalBinding(s.tls.ConnectionState())
	csr, err := pki.CheckRenewalRequest(req.CSR, binding)
	if err != nil {
		t.Fatalf("the client's request does not verify on its own session: %v", err)
	}
	old := s.tls.ConnectionState().PeerCertificates[0]
	tmpl := &x509.Certificate{SerialNumber: nextSerial(), RawSubject: old.RawSubject, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(life),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	reply := tunnel.RenewReply{Certs: [][]byte{der, ca.cert.Raw}}
	if withCAs {
		reply.CAs = [][]byte{ca.cert.Raw}
	}
	b, _ := tunnel.EncodeRenewReply(reply)
	if err := s.w.WriteControl(tunnel.FrameRenewed, b); err != nil {
		t.Fatal(err)
	}
	x, _ := x509.ParseCertificate(der)
	return x, req.Attestation
}

// TestRenewal: the laptop renews at renew_at, writes the new pair into its
// profile (the rest of the file kept), uses it at once and at the next
// connection, keeps the old pair aside until that connection succeeds,
// and tries the old pair once when the new one is refused.
func TestRenewal(t *testing.T) {
	noLeaks(t)
	e := startClient(t, envOpt{editCA: renewProfile(t, time.Minute, 50*time.Second)})
	s, h := e.up(renewConfig(0.5))
	if !tunnel.HasCap(h.Caps, tunnel.CapRenew) {
		t.Fatalf("hello caps %v: renewal not offered by a profile that can take it", h.Caps)
	}
	oldSerial := e.c.Status().CertSerial
	renewed := answerRenewal(t, s, e.ca, time.Hour)
	st := e.status("one renewal", func(st Status) bool { return st.Renewals == 1 })
	if st.CertSerial != pki.FormatSerial(renewed.SerialNumber) || !st.CertNotAfter.Equal(renewed.NotAfter) || !st.Renewal || st.RenewError != "" {
		t.Fatalf("status after renewal %+v", st)
	}
	// The profile holds the new pair, whole, and everything else it had.
	cfg, err := LoadConfig(e.c.cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair([]byte(cfg.TLS.CertPEM), []byte(cfg.TLS.KeyPEM))
	if err != nil || !pair.Leaf.Equal(renewed) {
		t.Fatalf("profile after renewal: %v", err)
	}
	text, _ := os.ReadFile(e.c.cfg.Path)
	for _, keep := range []string{"# sallyport client config for device", "# the device's certificate", "# keep this comment", `driver = "wireguard"`} {
		if !strings.Contains(string(text), keep) {
			t.Errorf("the rewritten profile lost %q", keep)
		}
	}
	if fi, _ := os.Stat(e.c.cfg.Path); fi.Mode().Perm() != 0o600 {
		t.Errorf("profile mode %v after the rewrite", fi.Mode().Perm())
	}
	if _, err := os.Stat(previousFile(e.c.cfg)); err != nil {
		t.Fatalf("the previous pair was not kept aside: %v", err)
	}

	// The next connection presents the new certificate; it is refused (a
	// gateway that does not trust the issuer), so the old one is tried.
	s.tls.Close()
	s2 := e.gw.accept(t)
	if got := s2.tls.ConnectionState().PeerCertificates[0]; !got.Equal(renewed) {
		t.Fatalf("reconnected with serial %s, want the renewed %s", got.SerialNumber, renewed.SerialNumber)
	}
	s2.hello(t)
	s2.refuse(t, string(tunnel.ReasonUnknownCA))
	s3 := e.gw.accept(t)
	if got := pki.FormatSerial(s3.tls.ConnectionState().PeerCertificates[0].SerialNumber); got != oldSerial {
		t.Fatalf("after the renewed certificate was refused: serial %s, want the previous %s", got, oldSerial)
	}
	s3.hello(t)
	if err := s3.w.WriteConfig(testConfig()); err != nil {
		t.Fatal(err)
	}
	e.status("connected with the previous pair", func(st Status) bool { return st.Connected && st.CertSerial == oldSerial })
}

// TestRenewalSessionSucceedsDropsPrevious: once a session with the new
// pair is up, the pair kept aside is removed.
func TestRenewalSessionSucceedsDropsPrevious(t *testing.T) {
	e := startClient(t, envOpt{editCA: renewProfile(t, time.Minute, 50*time.Second)})
	s, _ := e.up(renewConfig(0.5))
	answerRenewal(t, s, e.ca, time.Hour)
	e.status("one renewal", func(st Status) bool { return st.Renewals == 1 })
	s.tls.Close()
	e.up(testConfig())
	waitUntil(t, "the previous pair removed", func() bool { _, err := os.Stat(previousFile(e.c.cfg)); return os.IsNotExist(err) })
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRenewalRefusedRetries: a refused renewal keeps the session and the
// certificate, and is asked again after the gateway's retry_after.
func TestRenewalRefusedRetries(t *testing.T) {
	e := startClient(t, envOpt{editCA: renewProfile(t, time.Minute, 50*time.Second)})
	s, _ := e.up(renewConfig(0.5))
	typ, _ := s.next(t)
	if typ != tunnel.FrameRenew {
		t.Fatalf("frame %s, want renew", tunnel.FrameName(typ))
	}
	b, _ := tunnel.EncodeRenewReply(tunnel.RenewReply{Reason: string(tunnel.ReasonCRLStale), RetryAfter: 1})
	if err := s.w.WriteControl(tunnel.FrameRenewed, b); err != nil {
		t.Fatal(err)
	}
	e.status("the refusal", func(st Status) bool { return strings.Contains(st.RenewError, "crl-stale") && st.Connected })
	answerRenewal(t, s, e.ca, time.Hour) // asked again
	e.status("the renewal after the retry", func(st Status) bool { return st.Renewals == 1 && st.RenewError == "" })
}

// TestNoRenewalWithFiles: a profile whose certificate is a file does not
// offer renewal (it could not keep what it gets).
func TestNoRenewalWithFiles(t *testing.T) {
	e := startClient(t, envOpt{})
	_, h := e.up(renewConfig(0.5))
	if tunnel.HasCap(h.Caps, tunnel.CapRenew) {
		t.Fatal("renewal offered by a profile not loaded from a file")
	}
}

// TestRenewedAnswerChecked: an answer that breaks any one rule is not
// taken: another key, another device, a CA, no clientAuth, not signed by
// the issuer sent with it, expired, not valid now.
func TestRenewedAnswerChecked(t *testing.T) {
	ca := newTestCA(t, "CA")
	stranger := newTestCA(t, "Stranger CA")
	oldTLS, _, _ := ca.leaf(t, "alice-laptop", deviceLeaf)
	old := &material{cert: oldTLS, leaf: oldTLS.Leaf, cas: []*x509.Certificate{ca.cert}}
	next, _ := softKeyMaker{like: oldTLS.Leaf.PublicKey}.NewKey()
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c := &Client{log: testLogger(&syncBuffer{})}
	// issue makes a proper answer with edit applied, for key pub.
	issue := func(pub any, edit func(*x509.Certificate)) []byte {
		tmpl := &x509.Certificate{SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: "alice-laptop"},
			NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if edit != nil {
			edit(tmpl)
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	mine := next.Signer.Public()
	for name, certs := range map[string][][]byte{
		"another key":    {issue(&other.PublicKey, nil)},
		"another device": {issue(mine, func(c *x509.Certificate) { c.Subject.CommonName = "bob-laptop" })},
		"a CA":           {issue(mine, func(c *x509.Certificate) { c.IsCA, c.BasicConstraintsValid = true, true })},
		"no clientAuth":  {issue(mine, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })},
		"no EKU":         {issue(mine, func(c *x509.Certificate) { c.ExtKeyUsage = nil })},
		"expired": {issue(mine, func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
		})},
		"another issuer": {issue(mine, nil), stranger.cert.Raw},
	} {
		if _, _, err := c.checkRenewed(old, next, tunnel.RenewReply{Certs: certs}, tls.ConnectionState{}); err == nil {
			t.Errorf("%s: taken", name)
		}
	}
	if _, _, err := c.checkRenewed(old, next, tunnel.RenewReply{Certs: [][]byte{issue(mine, nil), ca.cert.Raw}}, tls.ConnectionState{}); err != nil {
		t.Fatalf("good answer refused: %v", err)
	}
}

// TestAcceptBundle: the laptop takes a new CA bundle only when every CA in
// it is trusted already, signed by a trusted CA, or a new root vouched for
// by a cross-certificate from a trusted CA, and the bundle still verifies
// the gateway it is talking to.
func TestAcceptBundle(t *testing.T) {
	old := newTestCA(t, "Acme Root")
	next := newTestCA(t, "Acme Root G2")
	rogue := newTestCA(t, "Rogue Root")
	// The cross-certificate: Acme Root G2's subject and key, signed by Acme Root.
	crossDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: nextSerial(), Subject: next.cert.Subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}, old.cert, &next.key.PublicKey, old.key)
	if err != nil {
		t.Fatal(err)
	}
	gwOld, _, _ := old.leaf(t, "gw.test", gatewayLeaf)
	gwNext, _, _ := next.leaf(t, "gw.test", gatewayLeaf)
	cs := func(c tls.Certificate) tls.ConnectionState {
		return tls.ConnectionState{PeerCertificates: []*x509.Certificate{c.Leaf}}
	}
	leaf, _, _ := old.leaf(t, "not-a-ca", deviceLeaf)
	cur := []*x509.Certificate{old.cert}
	cases := []struct {
		name string
		ders [][]byte
		gw   tls.Certificate
		take bool
		why  string
	}{
		{"unchanged", [][]byte{old.cert.Raw}, gwOld, false, ""},
		{"rotation with a cross-certificate", [][]byte{old.cert.Raw, next.cert.Raw, crossDER}, gwOld, true, ""},
		{"new root without a cross-certificate", [][]byte{old.cert.Raw, next.cert.Raw}, gwOld, false, "vouched"},
		{"rogue root", [][]byte{old.cert.Raw, rogue.cert.Raw}, gwOld, false, "vouched"},
		{"bundle that drops this gateway's CA", [][]byte{next.cert.Raw, crossDER}, gwOld, false, "does not verify"},
		{"old root removed after the rotation", [][]byte{next.cert.Raw}, gwNext, false, "vouched"},
		{"a leaf", [][]byte{old.cert.Raw, leaf.Leaf.Raw}, gwOld, false, "not a CA"},
		{"garbage", [][]byte{{1, 2, 3}}, gwOld, false, "does not parse"},
	}
	for _, tc := range cases {
		got, why := acceptBundle(cur, tc.ders, cs(tc.gw))
		if (got != nil) != tc.take || !strings.Contains(why, tc.why) {
			t.Errorf("%s: took %v, why %q; want take %v, why containing %q", tc.name, got != nil, why, tc.take, tc.why)
		}
	}
	// Once the laptop trusts the rotation's bundle, the next CA alone is
	// trusted: removing the old root is taken.
	bundle, _ := acceptBundle(cur, [][]byte{old.cert.Raw, next.cert.Raw, crossDER}, cs(gwOld))
	if got, why := acceptBundle(bundle, [][]byte{next.cert.Raw}, cs(gwNext)); got == nil {
		t.Fatalf("old root removed after the laptop learned the next: %s", why)
	}
}

// TestRewriteTLS: the [tls] values are replaced whatever string form they
// were in; the rest of the file is untouched; what cannot be rewritten
// exactly is refused.
func TestRewriteTLS(t *testing.T) {
	pemText := "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
	set := map[string]string{"cert_pem": pemText, "key_tpm": "/etc/sallyport/next.tpmkey"}
	cases := []struct {
		name, in, want string
	}{
		{"multi-line basic", "a = 1\n[tls]\ncert_pem = \"\"\"\nold\n\"\"\"\nkey_tpm = \"/x\"\n[tunnel]\nb = 2\n",
			"a = 1\n[tls]\ncert_pem = \"\"\"\n" + pemText + "\"\"\"\nkey_tpm = \"/etc/sallyport/next.tpmkey\"\n[tunnel]\nb = 2\n"},
		{"literal and one-line", "[tls]\n  cert_pem = '''\nold\n'''  \nkey_tpm = '/x'\n",
			"[tls]\ncert_pem = \"\"\"\n" + pemText + "\"\"\"\nkey_tpm = \"/etc/sallyport/next.tpmkey\"\n"},
		{"missing keys added", "[tls] # mine\nca = \"ca.crt\"\n\n[admin]\n",
			"[tls] # mine\nkey_tpm = \"/etc/sallyport/next.tpmkey\"\ncert_pem = \"\"\"\n" + pemText + "\"\"\"\nca = \"ca.crt\"\n\n[admin]\n"},
		{"similar names left alone", "[tls]\ncert = \"c.crt\"\ncert_pem = \"x\"\nkey_tpm_x = 1\nkey_tpm = \"y\"\n",
			"[tls]\ncert = \"c.crt\"\ncert_pem = \"\"\"\n" + pemText + "\"\"\"\nkey_tpm_x = 1\nkey_tpm = \"/etc/sallyport/next.tpmkey\"\n"},
	}
	for _, tc := range cases {
		got, err := rewriteTLS([]byte(tc.in), set)
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: %v\n got %q\nwant %q", tc.name, err, got, tc.want)
		}
	}
	for name, in := range map[string]string{
		"no [tls]":       "[tunnel]\nx = 1\n",
		"not a string":   "[tls]\ncert_pem = 5\n",
		"unterminated":   "[tls]\ncert_pem = \"\"\"\nabc\n",
		"[tls] in a key": "[tunnel]\ntls = 1\n",
	} {
		if _, err := rewriteTLS([]byte(in), set); err == nil {
			t.Errorf("%s: rewritten", name)
		}
	}
	// A profile that would not load back as written is left alone.
	path := filepath.Join(t.TempDir(), "p.toml")
	orig := "server = \"gw:443\"\n[tls]\nca = \"ca.crt\"\ncert_pem = \"x\"\nkey_pem = \"y\"\n"
	if err := os.WriteFile(path, []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeProfile(path, map[string]string{"cert_pem": pemText, "key_pem": "k"}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); !bytes.Contains(b, []byte("AAAA")) {
		t.Fatalf("profile not rewritten: %s", b)
	}
	if err := writeProfile(path, map[string]string{"bogus_key": "z"}); err == nil {
		t.Fatal("a key the loader does not know was written")
	}
	// Nor one whose value would not read back the same (a carriage return
	// the multi-line form drops): the check after the rewrite catches it.
	if err := writeProfile(path, map[string]string{"cert_pem": "-----BEGIN CERTIFICATE-----\r\nAAAA\r\n-----END CERTIFICATE-----\n"}); err == nil {
		t.Fatal("a value the profile does not hold as given was written")
	}
}

// TestUnaskedRenewalAnswer: a renewal answer from a gateway the laptop did
// not negotiate renewal with ends the session as a protocol error.
func TestUnaskedRenewalAnswer(t *testing.T) {
	e := startClient(t, envOpt{})
	s, _ := e.up(testConfig())
	b, _ := tunnel.EncodeRenewReply(tunnel.RenewReply{Reason: string(tunnel.ReasonRenewUnavailable)})
	if err := s.w.WriteControl(tunnel.FrameRenewed, b); err != nil {
		t.Fatal(err)
	}
	e.status("protocol error", func(st Status) bool { return strings.Contains(st.LastError, "did not negotiate renewal") })
}

// TestRenewAt: renew_at with jitter stays within 5% of the lifetime.
func TestRenewAt(t *testing.T) {
	nb := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(300 * time.Hour)
	for range 1000 {
		at := renewAt(nb, na, 2.0/3)
		if at.Before(nb.Add(185*time.Hour)) || at.After(nb.Add(215*time.Hour)) {
			t.Fatalf("renew at %v, want 200h +- 15h", at.Sub(nb))
		}
	}
}

// closeCount is a hardware key handle that counts its closes.
type closeCount struct{ n int }

func (c *closeCount) Close() error { c.n++; return nil }

// TestReleaseKey: a replaced hardware key is closed once nothing uses it,
// never while the current or the kept-aside identity does.
func TestReleaseKey(t *testing.T) {
	a, b := &closeCount{}, &closeCount{}
	ma, mb := &material{closer: a}, &material{closer: b}
	releaseKey(ma, mb, nil)
	releaseKey(&material{closer: a}, ma) // shared with a material kept
	releaseKey(&material{}, ma)          // a key file: nothing to close
	releaseKey(nil)
	if a.n != 1 || b.n != 0 {
		t.Fatalf("closes: a %d b %d, want 1 0", a.n, b.n)
	}
	c := &Client{log: testLogger(&syncBuffer{}), cfg: &Config{stateDir: t.TempDir(), Path: filepath.Join(t.TempDir(), "p.toml")}}
	c.matp.Store(mb)
	c.prev.Store(&material{closer: a})
	c.dropPrevious()
	if a.n != 2 || c.prev.Load() != nil {
		t.Fatalf("the dropped previous key was not closed (%d)", a.n)
	}
}

// caCert makes a CA certificate named name for key (a new key when nil),
// signed by parent (self-signed when parent is nil), with edit applied to
// the template (path length, EKU, dates).
func caCert(t *testing.T, parent *testCA, name string, key *ecdsa.PrivateKey, edit func(*x509.Certificate)) *testCA {
	t.Helper()
	if key == nil {
		key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	tmpl := &x509.Certificate{SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		BasicConstraintsValid: true, IsCA: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	if edit != nil {
		edit(tmpl)
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key}
}

func pathLen(n int) func(*x509.Certificate) {
	return func(c *x509.Certificate) { c.MaxPathLen, c.MaxPathLenZero = n, n == 0 }
}

// TestAcceptBundleCAs: the CAs a renewal's bundle may introduce are the
// ones the admin's roots certified as CAs. A rotation of a PKI with an
// issuing intermediate (`pki init --intermediate`, then `pki rotate`:
// new root, its intermediate, the old root and intermediate, the
// cross-certificate) is taken, and so is its end. A CA certified by a CA
// whose path length forbids it is not: the online issuer's key is on
// every gateway, so a gateway that could vouch with it would plant any CA
// it likes, in two renewals. Before, the rotation was refused (the new
// intermediate's issuer was not yet trusted) and the plant was taken
// (only the signature was checked).
func TestAcceptBundleCAs(t *testing.T) {
	root := caCert(t, nil, "Acme", nil, pathLen(1))
	inter := caCert(t, root, "Acme Issuing CA", nil, pathLen(0))
	issuer := caCert(t, root, "Acme Online Issuer", nil, both(pathLen(0), func(c *x509.Certificate) {
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}))
	g2 := caCert(t, nil, "Acme G2", nil, pathLen(1))
	g2inter := caCert(t, g2, "Acme G2 Issuing CA", nil, pathLen(0))
	cross := caCert(t, root, "Acme G2", g2.key, pathLen(1))
	expiredCross := caCert(t, root, "Acme G2", g2.key, both(pathLen(1), func(c *x509.Certificate) { c.NotAfter = time.Now().Add(-time.Minute) }))
	evil := caCert(t, issuer, "Evil", nil, nil)
	evilRoot := caCert(t, nil, "Evil Root", nil, nil)
	evilCross := caCert(t, issuer, "Evil Root", evilRoot.key, nil)
	underInter := caCert(t, inter, "Sub CA", nil, nil)
	gw := func(ca *testCA) tls.ConnectionState {
		c, _, _ := ca.leaf(t, "gw.test", gatewayLeaf)
		return tls.ConnectionState{PeerCertificates: []*x509.Certificate{c.Leaf, ca.cert}}
	}
	ders := func(cas ...*testCA) [][]byte {
		var out [][]byte
		for _, c := range cas {
			out = append(out, c.cert.Raw)
		}
		return out
	}
	certs := func(cas ...*testCA) []*x509.Certificate {
		var out []*x509.Certificate
		for _, c := range cas {
			out = append(out, c.cert)
		}
		return out
	}
	cases := []struct {
		name   string
		cur    []*testCA
		bundle []*testCA
		gw     *testCA
		take   bool
	}{
		{"rotation with an intermediate", []*testCA{root, inter}, []*testCA{g2, g2inter, root, inter, cross}, inter, true},
		{"the same, the intermediate before its root", []*testCA{root, inter}, []*testCA{g2inter, root, inter, cross, g2}, inter, true},
		{"its end, the gateway on the next CA", []*testCA{g2, g2inter, root, inter, cross}, []*testCA{g2, g2inter}, g2inter, true},
		{"rotation without an intermediate", []*testCA{root}, []*testCA{g2, root, cross}, root, true},
		{"the online issuer itself", []*testCA{root, inter}, []*testCA{root, inter, issuer}, inter, true},
		{"a CA signed by the online issuer", []*testCA{root, inter}, []*testCA{root, inter, issuer, evil}, inter, false},
		{"the same, once the issuer is trusted", []*testCA{root, inter, issuer}, []*testCA{root, inter, issuer, evil}, inter, false},
		{"a root cross-certified by the online issuer", []*testCA{root, inter, issuer}, []*testCA{root, inter, issuer, evilRoot, evilCross}, inter, false},
		{"a CA signed by the intermediate", []*testCA{root, inter}, []*testCA{root, inter, underInter}, inter, false},
		{"an expired cross-certificate", []*testCA{root}, []*testCA{g2, root, expiredCross}, root, false},
	}
	for _, tc := range cases {
		got, why := acceptBundle(certs(tc.cur...), ders(tc.bundle...), gw(tc.gw))
		if (got != nil) != tc.take || (!tc.take && !strings.Contains(why, "vouched")) {
			t.Errorf("%s: took %v (%s), want %v", tc.name, got != nil, why, tc.take)
		}
	}
}

// TestRenewalKeepsAsideTheRightPair: the pair kept aside at a second
// renewal (in a later session of the same client) is the first renewal's
// certificate with its own key, which the profile holds by then, not the
// key the profile held when the client started.
func TestRenewalKeepsAsideTheRightPair(t *testing.T) {
	e := startClient(t, envOpt{editCA: renewProfile(t, time.Minute, 50*time.Second)})
	s, _ := e.up(renewConfig(0.5))
	first := answerRenewal(t, s, e.ca, 30*time.Second) // due again at once
	e.status("one renewal", func(st Status) bool { return st.Renewals == 1 })
	s.tls.Close()
	s2, _ := e.up(renewConfig(0.5))
	waitUntil(t, "the previous pair removed", func() bool { _, err := os.Stat(previousFile(e.c.cfg)); return os.IsNotExist(err) })
	answerRenewal(t, s2, e.ca, time.Hour)
	e.status("two renewals", func(st Status) bool { return st.Renewals == 2 })
	b, err := os.ReadFile(previousFile(e.c.cfg))
	if err != nil {
		t.Fatal(err)
	}
	var p previousPair
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair([]byte(p.CertPEM), []byte(p.Key["key_pem"]))
	if err != nil || !pair.Leaf.Equal(first) {
		t.Fatalf("the pair kept aside at the second renewal: %v", err)
	}
}

// TestNewUsesPreviousWhenProfileNotValid: a profile whose renewed
// certificate is not valid on this laptop's clock (cut short by an
// expiring issuer, or from a gateway whose clock runs ahead) starts with
// the pair its renewal replaced, when that one is valid; otherwise `up`
// fails as before. The file of the pair kept aside stays. Before, `up`
// failed while a valid pair sat in the state directory. Mutation caught:
// New without the fallback.
func TestNewUsesPreviousWhenProfileNotValid(t *testing.T) {
	ca := newTestCA(t, "CA")
	_, oldCert, oldKey := ca.leaf(t, "alice-laptop", deviceLeaf)
	for _, tc := range []struct {
		name   string
		nb, na time.Time
	}{
		{"not yet valid", time.Now().Add(time.Hour), time.Now().Add(2 * time.Hour)},
		{"expired", time.Now().Add(-2 * time.Hour), time.Now().Add(-time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, certPEM, keyPEM := ca.leaf(t, "alice-laptop", both(deviceLeaf, func(c *x509.Certificate) { c.NotBefore, c.NotAfter = tc.nb, tc.na }))
			path := filepath.Join(t.TempDir(), "alice.toml")
			text := "server = \"127.0.0.1:1\"\nserver_name = \"gw.test\"\n\n[tls]\nca_pem = \"\"\"\n" + string(ca.pem) + "\"\"\"\ncert_pem = \"\"\"\n" + string(certPEM) +
				"\"\"\"\nkey_pem = \"\"\"\n" + string(keyPEM) + "\"\"\"\n"
			if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			load := func() *Config {
				cfg, err := LoadConfig(path)
				if err != nil {
					t.Fatal(err)
				}
				cfg.stateDir = filepath.Join(filepath.Dir(path), "state")
				return cfg
			}
			if _, err := New(load(), testLogger(&syncBuffer{})); err == nil {
				t.Fatal("a certificate not valid now was taken with nothing kept aside")
			}
			cfg := load()
			keep := func(certPEM, keyPEM []byte) {
				b, _ := json.Marshal(previousPair{CertPEM: string(certPEM), Key: map[string]string{"key_pem": string(keyPEM)}})
				if err := os.MkdirAll(cfg.stateDir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(previousFile(cfg), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, laterCert, laterKey := ca.leaf(t, "alice-laptop", both(deviceLeaf, func(c *x509.Certificate) { c.NotBefore = time.Now().Add(time.Hour) }))
			keep(laterCert, laterKey)
			if _, err := New(cfg, testLogger(&syncBuffer{})); err == nil {
				t.Fatal("a kept pair that is not valid yet either was taken")
			}
			keep(oldCert, oldKey)
			c, err := New(cfg, testLogger(&syncBuffer{}))
			if err != nil {
				t.Fatalf("the pair kept aside was not used: %v", err)
			}
			want, _ := tls.X509KeyPair(oldCert, oldKey)
			if !c.material().leaf.Equal(want.Leaf) || c.prev.Load() != nil {
				t.Fatalf("started with serial %s (fallback %v), want the kept pair", c.material().leaf.SerialNumber, c.prev.Load() != nil)
			}
			c.dropPrevious()
			if _, err := os.Stat(previousFile(cfg)); err != nil {
				t.Fatal("the pair in use was removed from the state directory")
			}
		})
	}
}

// TestCertRefused: every refusal of the device's certificate itself makes
// the laptop try the pair a renewal replaced; a passing refusal or the
// network does not. Before, a renewed certificate refused as ca-leaf,
// bad-eku or hardware-key-required was retried alone, forever.
func TestCertRefused(t *testing.T) {
	for _, r := range []tunnel.Reason{tunnel.ReasonRevoked, tunnel.ReasonExpired, tunnel.ReasonUnknownCA, tunnel.ReasonNotAllowlisted,
		tunnel.ReasonNoPolicy, tunnel.ReasonCALeaf, tunnel.ReasonBadEKU, tunnel.ReasonHardwareKey} {
		if !certRefused(&closeError{reason: string(r)}) {
			t.Errorf("%s: the previous pair is not tried", r)
		}
	}
	for _, r := range []tunnel.Reason{tunnel.ReasonCRLStale, tunnel.ReasonDuplicate, tunnel.ReasonCapacity} {
		if certRefused(&closeError{reason: string(r)}) {
			t.Errorf("%s: taken for a refusal of the certificate", r)
		}
	}
	if certRefused(errors.New("connection reset")) {
		t.Error("a network error taken for a refusal of the certificate")
	}
}
