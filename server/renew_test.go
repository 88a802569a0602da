package server

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/renew"
	"github.com/sallyport/sallyport/tunnel"
)

// renewalTOML is the [renewal] table of the renewal harness.
const renewalTOML = `
[renewal]
issuer_cert = "issuer.crt"
issuer_key = "issuer.key"
lifetime = "2m"
record = "renewals.jsonl"
`

// newRenewalHarness is a gateway harness whose gateway renews: an online
// issuer under the harness CA (path length 0, clientAuth only).
func newRenewalHarness(t *testing.T, extra string) *gatewayHarness {
	t.Helper()
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	t.Cleanup(h.close)
	ic, ik := h.ca.sign(t, &x509.Certificate{SerialNumber: big.NewInt(77), Subject: pkix.Name{CommonName: "Harness Online Issuer"},
		NotAfter: time.Now().Add(12 * time.Hour), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	writePEM(t, filepath.Join(h.dir(), "issuer.crt"), "CERTIFICATE", ic.Raw)
	kd, _ := x509.MarshalPKCS8PrivateKey(ik)
	writePEM(t, filepath.Join(h.dir(), "issuer.key"), "PRIVATE KEY", kd)
	h.reload(renewalTOML + extra + engPolicyTOML)
	if h.s.trustNow().renew == nil {
		t.Fatal("renewal not configured after the reload")
	}
	return h
}

// renewDevice connects a device offering renewal.
func (h *gatewayHarness) renewDevice(cert tls.Certificate) (*device, tunnel.Config) {
	d := h.dial(cert)
	pc := h.connectCaps(d, "alice", tunnel.CapRenew)
	return d, pc
}

// renewReq sends a renewal request made with key for session of d (bind
// is d's own binding unless given) and returns the answer.
func (d *device) renew(t *testing.T, der []byte) tunnel.RenewReply {
	t.Helper()
	return d.renewWith(t, der, nil)
}

func (d *device) binding(t *testing.T) []byte {
	t.Helper()
	b, err := pki.RenewalBinding(d.tc.ConnectionState())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func request(t *testing.T, key crypto.Signer, binding []byte) []byte {
	t.Helper()
	der, err := pki.NewRenewalRequest(key, "alice", binding)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func newP256(t *testing.T) *ecdsa.PrivateKey {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return k
}

func parseChain(t *testing.T, ders [][]byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// TestRenewal: a device renews inside its session; the session moves to
// the new certificate at once (status, expiry), the answer carries the
// chain and the CA bundle, the issuance is recorded, and the device then
// connects with the new certificate to the same address.
func TestRenewal(t *testing.T) {
	h := newRenewalHarness(t, "")
	enroll := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	d, pc := h.renewDevice(enroll)
	if !tunnel.HasCap(pc.Caps, tunnel.CapRenew) || pc.RenewAt < 0.66 || pc.RenewAt > 0.67 {
		t.Fatalf("config answer caps %v renew_at %v, want renew offered at 2/3", pc.Caps, pc.RenewAt)
	}
	key := newP256(t)
	r := d.renew(t, request(t, key, d.binding(t)))
	if r.Reason != "" || len(r.Certs) != 2 || len(r.CAs) != 1 || !bytes.Equal(r.CAs[0], h.ca.cert.Raw) {
		t.Fatalf("answer: reason %q, %d certs, %d CAs", r.Reason, len(r.Certs), len(r.CAs))
	}
	chain := parseChain(t, r.Certs)
	leaf, old := chain[0], serialOf(t, enroll)
	oldX, _ := x509.ParseCertificate(enroll.Certificate[0])
	id := pki.IdentityOf(leaf)
	if !pki.SamePublicKey(leaf.PublicKey, key.Public()) || !bytes.Equal(leaf.RawSubject, oldX.RawSubject) || id.Lineage != pki.FormatSerial(old) {
		t.Fatalf("renewed certificate %+v", id)
	}
	if got := leaf.NotAfter.Sub(leaf.NotBefore); got != 2*time.Minute+12*time.Second {
		t.Fatalf("renewed lifetime %v, want 2m after a backdate of a tenth of it", got)
	}
	st, _ := h.sessionOf("alice")
	if st.Serial != id.Serial || !st.CertNotAfter.Equal(leaf.NotAfter) || st.Lineage != id.Lineage || st.Renewals != 1 || !st.Renewal || st.CA != h.ca.cert.Subject.String() {
		t.Fatalf("status after renewal %+v, want serial %s", st, id.Serial)
	}
	ss := h.liveSession("alice")
	if !ss.expiry().Equal(leaf.NotAfter) {
		t.Fatalf("session expiry %v, want the new certificate's %v", ss.expiry(), leaf.NotAfter)
	}
	if all := h.s.Status(); all.CAs[h.ca.cert.Subject.String()] != 1 || all.Renewal == nil || all.Renewal.Renewed != 1 {
		t.Fatalf("status CAs %v renewal %+v", all.CAs, all.Renewal)
	}
	recs, err := renew.Latest(filepath.Join(h.dir(), "renewals.jsonl"))
	if err != nil || len(recs) != 1 || recs[0].Serial != id.Serial || recs[0].Previous != pki.FormatSerial(old) || recs[0].Device != "alice" {
		t.Fatalf("issuance record %+v: %v", recs, err)
	}
	m := scrape(t, h.s)
	if !has(m, `sallyport_cert_renewals_total{reason="",result="issued"}`, "1") || !has(m, `sallyport_sessions_per_ca{ca="CN=Harness CA"}`, "1") {
		t.Errorf("metrics after a renewal:\n%s", grepSallyport(m))
	}
	// Asking again at once is refused, and the session stays.
	if r := d.renew(t, request(t, newP256(t), d.binding(t))); r.Reason != string(tunnel.ReasonRenewTooSoon) || r.RetryAfter == 0 {
		t.Fatalf("second renewal at once: %+v", r)
	}
	// The new certificate connects, to the same address, replacing the
	// old session (one device).
	next := tls.Certificate{Certificate: r.Certs, PrivateKey: key}
	d2, _ := h.renewDevice(next)
	if d2.addr != d.addr {
		t.Fatalf("renewed device got address %s, had %s", d2.addr, d.addr)
	}
	d.wantClose(t, tunnel.ReasonReplaced)
	// And renews again, keeping the lineage.
	h.forgetRenewals()
	r = d2.renew(t, request(t, newP256(t), d2.binding(t)))
	if len(r.Certs) == 0 || pki.IdentityOf(parseChain(t, r.Certs)[0]).Lineage != pki.FormatSerial(old) {
		t.Fatalf("second generation: %+v", r)
	}
}

// TestRenewalRequestAsksForMore: whatever the request says about subject,
// names, CA rights, usages or lineage, the certificate carries the
// verified identity and the request's key, nothing else.
func TestRenewalRequestAsksForMore(t *testing.T) {
	h := newRenewalHarness(t, "")
	enroll := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	oldX, _ := x509.ParseCertificate(enroll.Certificate[0])
	d, _ := h.renewDevice(enroll)
	key := newP256(t)
	bindVal, _ := asn1.Marshal(d.binding(t))
	bc, _ := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	forged, _ := pki.LineageExtension(pki.Lineage{Serial: big.NewInt(1), RawIssuer: oldX.RawIssuer})
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "root", OrganizationalUnit: []string{"admins", "eng"},
			ExtraNames: []pkix.AttributeTypeAndValue{{Type: pki.OIDUserID, Value: "bob"}}},
		DNSNames: []string{"gw.test"}, EmailAddresses: []string{"ceo@acme.example"},
		ExtraExtensions: []pkix.Extension{
			{Id: pki.OIDRenewalBinding, Value: bindVal},
			{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc},                                                // CA:TRUE
			{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Value: mustASN1(t, []asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 1}})}, // serverAuth
			forged,
		},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	r := d.renew(t, der)
	if r.Reason != "" {
		t.Fatalf("refused: %s", r.Reason)
	}
	got := parseChain(t, r.Certs)[0]
	id := pki.IdentityOf(got)
	if !bytes.Equal(got.RawSubject, oldX.RawSubject) || id.Device != "alice" || id.User != "" || strings.Join(id.Groups, ",") != "eng" ||
		len(got.DNSNames)+len(got.EmailAddresses) != 0 || got.IsCA || len(got.ExtKeyUsage) != 1 || got.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth ||
		id.Lineage != pki.FormatSerial(oldX.SerialNumber) || !pki.SamePublicKey(got.PublicKey, key.Public()) {
		t.Fatalf("the request's wishes reached the certificate: %+v CA %v EKU %v", id, got.IsCA, got.ExtKeyUsage)
	}
}

func mustASN1(t *testing.T, v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRenewalRefusals: what a thief (or a stale gateway) gets: nothing,
// and the session stays (except for a renew frame without the capability,
// a protocol error).
func TestRenewalRefusals(t *testing.T) {
	h := newRenewalHarness(t, "")
	enroll := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	d, _ := h.renewDevice(enroll)

	// A request recorded on another session of another device is refused
	// on this one: the binding is per session.
	other := h.ca.leafWithKey(t, "bob", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	d2 := h.dial(other)
	h.connectCaps(d2, "bob", tunnel.CapRenew)
	replayed := request(t, newP256(t), d2.binding(t))
	if r := d.renew(t, replayed); r.Reason != string(tunnel.ReasonRenewInvalid) {
		t.Fatalf("replayed request: %+v", r)
	}
	// The answer is out only once the session may ask again: a device
	// that asks right after reading it is not told "in progress".
	if ss := h.liveSession("alice"); ss.renew.inFlight.Load() {
		t.Fatal("the renewal is still in flight after its answer arrived")
	}
	// The current key again is no renewal.
	if r := d.renew(t, request(t, enroll.PrivateKey.(crypto.Signer), d.binding(t))); r.Reason != string(tunnel.ReasonRenewInvalid) {
		t.Fatalf("same key: %+v", r)
	}
	if st, ok := h.sessionOf("alice"); !ok || st.Renewals != 0 {
		t.Fatalf("session after refused renewals: %+v %v", st, ok)
	}
	// An expired certificate never renews, whatever the clock says.
	ss := h.liveSession("alice")
	if r := ss.renewNow(tunnel.RenewRequest{CSR: request(t, newP256(t), d.binding(t))}, mustLeaf(t, enroll).NotAfter.Add(time.Second)); r.Reason != string(tunnel.ReasonExpired) {
		t.Fatalf("expired certificate: %+v", r)
	}
	// A stale CRL (tls.crl_stale = refuse) refuses renewal with a retry;
	// the live session stays.
	h.writeCRL(1, time.Now().Add(-time.Minute))
	h.reload("crl = \"crl.pem\"\n" + renewalTOML + engPolicyTOML)
	if h.s.trustNow().crl == nil {
		t.Fatal("CRL not loaded")
	}
	if r := d.renew(t, request(t, newP256(t), d.binding(t))); r.Reason != string(tunnel.ReasonCRLStale) || r.RetryAfter < 600 {
		t.Fatalf("stale CRL: %+v", r)
	}
	if _, ok := h.sessionOf("alice"); !ok {
		t.Fatal("the stale CRL cut the live session")
	}
	// Renewal turned off by a reload: the gateway says so.
	h.writeCRL(2, time.Now().Add(time.Hour))
	h.reload("crl = \"crl.pem\"\n" + engPolicyTOML)
	if r := d.renew(t, request(t, newP256(t), d.binding(t))); r.Reason != string(tunnel.ReasonRenewUnavailable) {
		t.Fatalf("renewal off: %+v", r)
	}
	// A device that did not negotiate renewal and sends a renew frame
	// breaks the protocol.
	h.reload("crl = \"crl.pem\"\n" + renewalTOML + engPolicyTOML)
	d3 := h.dial(h.ca.leafWithKey(t, "carol", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	h.connectCaps(d3, "carol")
	b, _ := tunnel.EncodeRenewRequest(tunnel.RenewRequest{CSR: request(t, newP256(t), d3.binding(t))})
	if err := d3.w.WriteControl(tunnel.FrameRenew, b); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := d3.next(5 * time.Second); ok {
		t.Fatal("session open after a renew frame it did not negotiate")
	}
	waitFor(t, func() bool { _, ok := h.sessionOf("carol"); return !ok })
}

func mustLeaf(t *testing.T, c tls.Certificate) *x509.Certificate {
	t.Helper()
	x, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestRenewalLineageRevoked: revoking the enrollment serial cuts the live
// session of a device renewed three times, and its renewed certificates
// are refused at once; revoking a renewed serial itself works too.
func TestRenewalLineageRevoked(t *testing.T) {
	h := newRenewalHarness(t, "")
	enroll := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	cert := enroll
	d, _ := h.renewDevice(cert)
	var chains [][]*x509.Certificate
	for range 3 {
		key := newP256(t)
		r := d.renew(t, request(t, key, d.binding(t)))
		if r.Reason != "" {
			t.Fatalf("renewal: %s", r.Reason)
		}
		chains = append(chains, parseChain(t, r.Certs))
		cert = tls.Certificate{Certificate: r.Certs, PrivateKey: key}
		old := d
		d, _ = h.renewDevice(cert) // the laptop's next session, with the renewed certificate
		old.wantClose(t, tunnel.ReasonReplaced)
		h.forgetRenewals()
	}
	third := chains[2]
	if pki.IdentityOf(third[0]).Lineage != pki.FormatSerial(serialOf(t, enroll)) {
		t.Fatal("lineage lost across renewals")
	}
	// The CRL lists only the enrollment serial.
	h.writeCRL(1, time.Now().Add(time.Hour), serialOf(t, enroll))
	h.reload("crl = \"crl.pem\"\n" + renewalTOML + engPolicyTOML)
	d.wantClose(t, tunnel.ReasonRevoked)
	tr := h.s.trustNow()
	for i, ch := range chains {
		if _, err := tr.decide(ch, nil, time.Now(), forNewSession); classify(err).reason != tunnel.ReasonRevoked {
			t.Errorf("renewal %d after its enrollment was revoked: %v", i+1, err)
		}
	}
	// A fresh device is unaffected; revoking one renewed serial refuses
	// exactly that certificate.
	bob := h.ca.leafWithKey(t, "bob", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	db := h.dial(bob)
	h.connectCaps(db, "bob", tunnel.CapRenew)
	key := newP256(t)
	r := db.renew(t, request(t, key, db.binding(t)))
	bobRenewed := parseChain(t, r.Certs)
	if _, err := h.s.trustNow().decide(bobRenewed, nil, time.Now(), forNewSession); err != nil {
		t.Fatalf("bob's renewal refused before any revocation: %v", err)
	}
	h.writeCRL(2, time.Now().Add(time.Hour), serialOf(t, enroll), bobRenewed[0].SerialNumber)
	h.reload("crl = \"crl.pem\"\n" + renewalTOML + engPolicyTOML)
	db.wantClose(t, tunnel.ReasonRevoked)
}

// TestRenewalNotOfferedOutsideBundle: renewal.ca_bundle names the CAs
// whose devices are renewed; a device of another CA of client_ca is not
// offered renewal.
func TestRenewalNotOfferedOutsideBundle(t *testing.T) {
	h := newRenewalHarness(t, "")
	other := newTestCA(t, "Contractor CA")
	both := append(pemOf(h.ca.cert), pemOf(other.cert)...)
	if err := os.WriteFile(filepath.Join(h.dir(), "ca.crt"), both, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.dir(), "bundle.crt"), pemOf(h.ca.cert), 0o600); err != nil {
		t.Fatal(err)
	}
	h.reload(renewalTOML + "ca_bundle = \"bundle.crt\"\n" + engPolicyTOML)
	d := h.dial(other.leafWithKey(t, "contractor", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	if pc := h.connectCaps(d, "contractor", tunnel.CapRenew); tunnel.HasCap(pc.Caps, tunnel.CapRenew) || pc.RenewAt != 0 {
		t.Fatalf("renewal offered to a device of a CA outside the bundle: %v", pc.Caps)
	}
	d2, pc := h.renewDevice(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	if !tunnel.HasCap(pc.Caps, tunnel.CapRenew) {
		t.Fatal("renewal not offered to a device of the bundle's CA")
	}
	// A reload that takes the device's CA out of the bundle stops its
	// renewals, though the session negotiated renewal before.
	if err := os.WriteFile(filepath.Join(h.dir(), "bundle.crt"), pemOf(other.cert), 0o600); err != nil {
		t.Fatal(err)
	}
	h.reload(renewalTOML + "ca_bundle = \"bundle.crt\"\n" + engPolicyTOML)
	if r := d2.renew(t, request(t, newP256(t), d2.binding(t))); r.Reason != string(tunnel.ReasonRenewUnavailable) {
		t.Fatalf("renewal of a device whose CA left the bundle: %+v", r)
	}
}

// TestRenewalOutlivesOldCertificate: the session moved to the renewed
// certificate is not ended when the certificate it started with expires.
func TestRenewalOutlivesOldCertificate(t *testing.T) {
	h := newRenewalHarness(t, "")
	short, key := h.ca.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "alice", OrganizationalUnit: []string{"eng"}},
		NotAfter: time.Now().Add(1500 * time.Millisecond), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature})
	d, _ := h.renewDevice(tls.Certificate{Certificate: [][]byte{short.Raw}, PrivateKey: key})
	if r := d.renew(t, request(t, newP256(t), d.binding(t))); r.Reason != "" {
		t.Fatalf("renewal: %s", r.Reason)
	}
	time.Sleep(time.Until(short.NotAfter) + 500*time.Millisecond)
	if typ, _, ok := d.next(time.Second); ok && typ == tunnel.FrameClose {
		t.Fatal("the session ended when the certificate it started with expired")
	}
	if _, ok := h.sessionOf("alice"); !ok {
		t.Fatal("no session after the first certificate expired")
	}
}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// TestRenewalOneAtATime: a second request while one is being decided is
// answered renew-too-soon at once; the first still gets its certificate.
func TestRenewalOneAtATime(t *testing.T) {
	h := newRenewalHarness(t, "")
	d, _ := h.renewDevice(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	h.s.renewSlots <- struct{}{} // every slot taken: the first request waits
	for range cap(h.s.renewSlots) - 1 {
		h.s.renewSlots <- struct{}{}
	}
	for range 2 {
		b, _ := tunnel.EncodeRenewRequest(tunnel.RenewRequest{CSR: request(t, newP256(t), d.binding(t))})
		if err := d.w.WriteControl(tunnel.FrameRenew, b); err != nil {
			t.Fatal(err)
		}
	}
	answer := func() tunnel.RenewReply {
		typ, p, ok := d.next(5 * time.Second)
		if !ok || typ != tunnel.FrameRenewed {
			t.Fatalf("frame %#x ok %v", typ, ok)
		}
		r, err := tunnel.DecodeRenewReply(p)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := answer(); r.Reason != string(tunnel.ReasonRenewTooSoon) {
		t.Fatalf("second request while the first waits: %+v", r)
	}
	for range cap(h.s.renewSlots) {
		<-h.s.renewSlots
	}
	if r := answer(); r.Reason != "" || len(r.Certs) != 2 {
		t.Fatalf("first request: %+v", r)
	}
}

// TestRenewalLineageCAsRevoked: revoking a CA that signed a certificate of
// a device's lineage cuts the device, though its renewed certificate's own
// chain no longer holds that CA: the intermediate its enrollment came
// from, and an online issuer that renewed it before another did. Before,
// one renewal put a device out of reach of both revocations (a leaked
// intermediate or issuer key minted certificates that then lived on
// through renewals). A CA only retired (superseded) cuts nobody.
// Mutations caught: checkLineage without the CA loop, and with every
// reason cutting.
func TestRenewalLineageCAsRevoked(t *testing.T) {
	h := newRenewalHarness(t, "")
	const crl = "crl = \"crl.pem\"\n"
	inter := h.ca.intermediate(t, "Harness Issuing CA", 50, time.Now().Add(12*time.Hour))
	alice := inter.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	alice.Certificate = append(alice.Certificate, inter.cert.Raw)
	// renewAndReconnect renews d's certificate and connects again with the
	// renewed one, as the laptop does.
	renewAndReconnect := func(d *device, name string) *device {
		t.Helper()
		h.forgetRenewals()
		key := newP256(t)
		r := d.renew(t, request(t, key, d.binding(t)))
		if r.Reason != "" {
			t.Fatalf("renewal of %s: %s", name, r.Reason)
		}
		next := h.dial(tls.Certificate{Certificate: r.Certs, PrivateKey: key})
		h.connectCaps(next, name, tunnel.CapRenew)
		d.wantClose(t, tunnel.ReasonReplaced)
		return next
	}
	connect := func(c tls.Certificate, name string) *device {
		d := h.dial(c)
		h.connectCaps(d, name, tunnel.CapRenew)
		return d
	}
	da := renewAndReconnect(connect(alice, "alice"), "alice")
	entry := func(serial int64, reason int) x509.RevocationListEntry {
		return x509.RevocationListEntry{SerialNumber: big.NewInt(serial), RevocationTime: time.Now(), ReasonCode: reason}
	}
	// The intermediate retired: alice stays.
	h.writeCRLEntries(1, time.Now().Add(time.Hour), entry(50, 4)) // superseded
	h.reload(crl + renewalTOML + engPolicyTOML)
	if _, ok := h.sessionOf("alice"); !ok || h.s.trustNow().crl.Len() != 1 {
		t.Fatal("a retired intermediate cut a device renewed since")
	}
	// The intermediate's key leaked: alice is cut.
	h.writeCRLEntries(2, time.Now().Add(time.Hour), entry(50, 1)) // keyCompromise
	h.reload(crl + renewalTOML + engPolicyTOML)
	da.wantClose(t, tunnel.ReasonRevoked)

	// bob renews under the first online issuer (serial 77), then, once a
	// second one is installed, under it.
	db := renewAndReconnect(connect(h.ca.leafWithKey(t, "bob", []string{"eng"}, x509.ExtKeyUsageClientAuth), "bob"), "bob")
	ic, ik := h.ca.sign(t, &x509.Certificate{SerialNumber: big.NewInt(78), Subject: pkix.Name{CommonName: "Harness Online Issuer 2"},
		NotAfter: time.Now().Add(12 * time.Hour), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	writePEM(t, filepath.Join(h.dir(), "issuer.crt"), "CERTIFICATE", ic.Raw)
	kd, _ := x509.MarshalPKCS8PrivateKey(ik)
	writePEM(t, filepath.Join(h.dir(), "issuer.key"), "PRIVATE KEY", kd)
	h.reload(crl + renewalTOML + engPolicyTOML)
	if got := h.s.trustNow().renew.issuer.Cert().SerialNumber.Int64(); got != 78 {
		t.Fatalf("issuer %d after the reload", got)
	}
	db = renewAndReconnect(db, "bob")
	h.writeCRLEntries(3, time.Now().Add(time.Hour), entry(50, 1), entry(77, 1))
	h.reload(crl + renewalTOML + engPolicyTOML)
	db.wantClose(t, tunnel.ReasonRevoked)
}

// TestRenewalForgedLineage: a certificate the admin's CA signed that
// carries a lineage extension (a CA that copies extensions from requests,
// or a forged one) is renewed as the enrollment it is: its renewals name
// its own serial, so revoking it cuts them. Before, the renewal copied the
// lineage it carried, and revoking the certificate the admin issued did
// not touch its renewals. Mutation caught: NextLineage carrying the
// extension whatever signed it.
func TestRenewalForgedLineage(t *testing.T) {
	h := newRenewalHarness(t, "")
	other, _ := pki.LineageExtension(pki.Lineage{Serial: big.NewInt(1), RawIssuer: h.ca.cert.RawSubject})
	cert, key := h.ca.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "carol", OrganizationalUnit: []string{"eng"}},
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtraExtensions: []pkix.Extension{other}})
	d := h.dial(tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key})
	h.connectCaps(d, "carol", tunnel.CapRenew)
	next := newP256(t)
	r := d.renew(t, request(t, next, d.binding(t)))
	if r.Reason != "" {
		t.Fatalf("renewal: %s", r.Reason)
	}
	if got := pki.IdentityOf(parseChain(t, r.Certs)[0]).Lineage; got != pki.FormatSerial(cert.SerialNumber) {
		t.Fatalf("renewed lineage %s, want the certificate's own serial %s", got, pki.FormatSerial(cert.SerialNumber))
	}
	d2 := h.dial(tls.Certificate{Certificate: r.Certs, PrivateKey: next})
	h.connectCaps(d2, "carol", tunnel.CapRenew)
	d.wantClose(t, tunnel.ReasonReplaced)
	h.writeCRL(1, time.Now().Add(time.Hour), cert.SerialNumber)
	h.reload("crl = \"crl.pem\"\n" + renewalTOML + engPolicyTOML)
	d2.wantClose(t, tunnel.ReasonRevoked)
}

// TestRenewalRaceWithReload: a reload that stores new trust after a
// renewal decided for the certificate in use, and before the session
// moves, is applied to that certificate too: a device the reload refuses
// (here its renewed certificate's own serial revoked) gets no certificate,
// though the new one, with a new serial, would pass. Before, the move
// decided for the new chain alone and the device left the cut with a
// fresh certificate. Mutation caught: moveTo without the second decision
// for the certificate in use.
func TestRenewalRaceWithReload(t *testing.T) {
	h := newRenewalHarness(t, "")
	d, _ := h.renewDevice(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	key := newP256(t)
	r := d.renew(t, request(t, key, d.binding(t)))
	if r.Reason != "" {
		t.Fatalf("renewal: %s", r.Reason)
	}
	d2 := h.dial(tls.Certificate{Certificate: r.Certs, PrivateKey: key})
	h.connectCaps(d2, "alice", tunnel.CapRenew)
	d.wantClose(t, tunnel.ReasonReplaced)
	renewed := parseChain(t, r.Certs)
	ss := h.s.byKey[deviceKey(pki.IdentityOf(renewed[0]))]

	// The renewal: trust t1 decides for the certificate in use and the
	// issuer signs ...
	now := time.Now()
	t1 := h.s.trustNow()
	v, err := t1.decide(ss.cert.Load().peer, nil, now, forNewSession)
	if err != nil {
		t.Fatal(err)
	}
	next, err := t1.renew.issuer.Reissue(v.chain, newP256(t).Public(), now, t1.renew.lifetime)
	if err != nil {
		t.Fatal(err)
	}
	// ... then a reload stores trust that revokes the certificate in use,
	// and has not re-checked the sessions yet ...
	h.writeCRL(1, time.Now().Add(time.Hour), renewed[0].SerialNumber)
	writeFile(t, h.s.config().Path, harnessTOML("crl = \"crl.pem\"\n"+renewalTOML+engPolicyTOML))
	cfg, t2, err := load(h.s.config().Path, t1)
	if err != nil {
		t.Fatal(err)
	}
	h.s.snap.Store(&snapshot{cfg: cfg, trust: t2})
	if _, err := t2.decide(append([]*x509.Certificate{next}, t1.renew.issuer.Chain()...), nil, now, forNewSession); err != nil {
		t.Fatalf("the new certificate itself is refused by the new trust (the test would prove nothing): %v", err)
	}
	// ... and the session moves.
	err = ss.moveTo(append([]*x509.Certificate{next}, t1.renew.issuer.Chain()...), t1, now)
	var rr *renewRefusal
	if !errors.As(err, &rr) || rr.reason != tunnel.ReasonRevoked {
		t.Fatalf("move after a reload that revoked the certificate in use: %v, want a refusal (revoked)", err)
	}
	if !ss.cert.Load().peer[0].Equal(renewed[0]) {
		t.Fatal("the session moved to the new certificate")
	}
}

// TestRenewalGapAcrossSessions: a device renews at most once per gap
// (a tenth of the lifetime, at most a minute) on a gateway, whatever
// session it asks from: connecting again, with the renewed certificate
// or with the one it replaced, does not buy another renewal at once.
// Before, the gap was the session's, and a device (a thief with a copied
// bundle, a client in a loop) minted a certificate per connection.
// Mutation caught: the gateway-wide check removed.
func TestRenewalGapAcrossSessions(t *testing.T) {
	h := newRenewalHarness(t, "")
	enroll := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	d, _ := h.renewDevice(enroll)
	key := newP256(t)
	r := d.renew(t, request(t, key, d.binding(t)))
	if r.Reason != "" {
		t.Fatalf("renewal: %s", r.Reason)
	}
	gap := h.s.trustNow().renew.minRenewGap()
	at := time.Now()
	for i, tc := range []struct {
		name string
		cert tls.Certificate
	}{
		{"the renewed certificate", tls.Certificate{Certificate: r.Certs, PrivateKey: key}},
		{"the replaced one", enroll},
	} {
		d2 := h.dial(tc.cert)
		h.connectCaps(d2, "alice", tunnel.CapRenew)
		if i == 0 {
			d.wantClose(t, tunnel.ReasonReplaced)
		}
		got := d2.renew(t, request(t, newP256(t), d2.binding(t)))
		// (retry_after is what is left of the gap, and a quarter more of
		// jitter; the second time, the last renewal is a test's future)
		if got.Reason != string(tunnel.ReasonRenewTooSoon) || got.RetryAfter <= 0 || i == 0 && time.Duration(got.RetryAfter)*time.Second > 2*gap {
			t.Fatalf("a new session with %s renewed again at once: reason %q, retry_after %d", tc.name, got.Reason, got.RetryAfter)
		}
		// Once the gap has passed, it renews.
		ss := h.s.byKey[deviceKey(pki.IdentityOf(mustLeaf(t, tc.cert)))]
		at = at.Add(gap + time.Second)
		if rr := ss.renewNow(tunnel.RenewRequest{CSR: request(t, newP256(t), d2.binding(t))}, at); rr.Reason != "" {
			t.Fatalf("%s after the gap: %s", tc.name, rr.Reason)
		}
		d2.tc.Close()
		waitFor(t, func() bool { _, ok := h.sessionOf("alice"); return !ok })
	}
}

// forgetRenewals clears the gateway's memory of recent renewals, for
// tests that renew a device on consecutive sessions.
func (h *gatewayHarness) forgetRenewals() { h.s.renewGaps = renewGaps{} }

// TestRenewalConfigRefused: a [renewal] the gateway cannot honour keeps
// the running configuration: an issuer that does not chain to client_ca
// (every certificate it signed would be refused), a CA bundle holding a
// leaf, or more CAs than a renewal answer carries. And a certificate whose
// lineage does not decode is refused (whether its enrollment was revoked
// cannot be told).
func TestRenewalConfigRefused(t *testing.T) {
	h := newRenewalHarness(t, "")
	other := newTestCA(t, "Other CA")
	ic, ik := other.sign(t, &x509.Certificate{SerialNumber: big.NewInt(88), Subject: pkix.Name{CommonName: "Stray Online Issuer"},
		NotAfter: time.Now().Add(12 * time.Hour), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	writePEM(t, filepath.Join(h.dir(), "stray.crt"), "CERTIFICATE", ic.Raw)
	kd, _ := x509.MarshalPKCS8PrivateKey(ik)
	writePEM(t, filepath.Join(h.dir(), "stray.key"), "PRIVATE KEY", kd)
	leaf := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	writePEM(t, filepath.Join(h.dir(), "leaf.crt"), "CERTIFICATE", leaf.Certificate[0])
	var many []byte
	for range tunnel.MaxRenewCAs + 1 {
		many = append(many, pemOf(h.ca.cert)...)
	}
	if err := os.WriteFile(filepath.Join(h.dir(), "many.crt"), many, 0o600); err != nil {
		t.Fatal(err)
	}
	stray := strings.NewReplacer(`"issuer.crt"`, `"stray.crt"`, `"issuer.key"`, `"stray.key"`).Replace(renewalTOML)
	for _, tc := range []struct{ name, toml, want string }{
		{"issuer of another CA", stray, "does not chain to a CA of tls.client_ca"},
		{"a leaf in the bundle", renewalTOML + "ca_bundle = \"leaf.crt\"\n", "is not a CA certificate"},
		{"too many CAs", renewalTOML + "ca_bundle = \"many.crt\"\n", "at most 16"},
	} {
		writeFile(t, h.s.config().Path, harnessTOML(tc.toml+engPolicyTOML))
		if _, _, err := load(h.s.config().Path, h.s.trustNow()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	garbled, _ := h.ca.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "mallory", OrganizationalUnit: []string{"eng"}},
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtraExtensions: []pkix.Extension{{Id: pki.OIDLineage, Value: []byte{0x30, 0x03, 0x02, 0x01, 0x01}}}})
	if _, err := h.s.trustNow().decide([]*x509.Certificate{garbled}, nil, time.Now(), forNewSession); classify(err).reason != tunnel.ReasonRevoked {
		t.Fatalf("a lineage that does not decode: %v", err)
	}
}

// TestRenewalSessionEnded: a session that ended while its renewal was
// being decided does not move to the new certificate.
func TestRenewalSessionEnded(t *testing.T) {
	h := newRenewalHarness(t, "")
	alice := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	h.renewDevice(alice)
	ss := h.s.byKey[deviceKey(pki.IdentityOf(mustLeaf(t, alice)))]
	now := time.Now()
	tr := h.s.trustNow()
	v, err := tr.decide(ss.cert.Load().peer, nil, now, forNewSession)
	if err != nil {
		t.Fatal(err)
	}
	next, err := tr.renew.issuer.Reissue(v.chain, newP256(t).Public(), now, tr.renew.lifetime)
	if err != nil {
		t.Fatal(err)
	}
	old := ss.cert.Load()
	ss.close(tunnel.ReasonKicked, nil)
	if err := ss.moveTo(append([]*x509.Certificate{next}, tr.renew.issuer.Chain()...), tr, now); err == nil || ss.cert.Load() != old {
		t.Fatalf("an ended session moved to its renewal: %v", err)
	}
}
