package renew

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki"
)

type ca struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sign(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newRoot(t testing.TB) *ca {
	k := newKey(t)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Acme Root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLen: 1, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	return &ca{sign(t, tmpl, tmpl, k.Public(), k), k}
}

// issuerTmpl is a proper online issuer; tests break one rule at a time.
func issuerTmpl() *x509.Certificate {
	return &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Acme Online Issuer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
}

func (r *ca) issuer(t testing.TB, edit func(*x509.Certificate)) (*x509.Certificate, crypto.Signer) {
	k := newKey(t)
	tmpl := issuerTmpl()
	if edit != nil {
		edit(tmpl)
	}
	return sign(t, tmpl, r.cert, k.Public(), r.key), k
}

// enrollment is the certificate the admin issued: subject with CN, two
// groups and the user; SANs of every kind.
func (r *ca) enrollment(t testing.TB) *x509.Certificate {
	u, _ := url.Parse("spiffe://acme/alice")
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x5eed),
		Subject: pkix.Name{CommonName: "alice-laptop", OrganizationalUnit: []string{"eng", "ops"},
			ExtraNames: []pkix.AttributeTypeAndValue{{Type: pki.OIDUserID, Value: "alice"}}},
		DNSNames: []string{"alice.acme.example"}, EmailAddresses: []string{"alice@acme.example"}, URIs: []*url.URL{u},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	return sign(t, tmpl, r.cert, newKey(t).Public(), r.key)
}

func sanOf(c *x509.Certificate) []byte {
	for _, e := range c.Extensions {
		if e.Id.Equal(oidSAN) {
			return e.Value
		}
	}
	return nil
}

func TestReissue(t *testing.T) {
	root := newRoot(t)
	icert, ikey := root.issuer(t, nil)
	is, err := New([]*x509.Certificate{icert}, ikey)
	if err != nil {
		t.Fatal(err)
	}
	enroll := root.enrollment(t)
	now := time.Now()
	newKey := newKey(t)
	got, err := is.Reissue(chainOf(enroll, root.cert), newKey.Public(), now, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.RawSubject, enroll.RawSubject) || !bytes.Equal(sanOf(got), sanOf(enroll)) {
		t.Fatalf("identity not copied: subject %q SAN %x, want %q %x", got.Subject, sanOf(got), enroll.Subject, sanOf(enroll))
	}
	if got.IsCA || len(got.ExtKeyUsage) != 1 || got.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || !pki.SamePublicKey(got.PublicKey, newKey.Public()) {
		t.Fatalf("renewed certificate: CA %v EKU %v", got.IsCA, got.ExtKeyUsage)
	}
	if got.SerialNumber.Cmp(enroll.SerialNumber) == 0 || got.SerialNumber.BitLen() != 129 {
		t.Fatalf("serial %s", got.SerialNumber)
	}
	if err := got.CheckSignatureFrom(icert); err != nil {
		t.Fatal(err)
	}
	if !got.NotBefore.Equal(now.Add(-12*time.Second).Truncate(time.Second)) || !got.NotAfter.Equal(now.Add(2*time.Minute).Truncate(time.Second)) {
		t.Fatalf("validity %s .. %s", got.NotBefore, got.NotAfter)
	}
	id := pki.IdentityOf(got)
	if id.Device != "alice-laptop" || id.User != "alice" || strings.Join(id.Groups, ",") != "eng,ops" || id.Lineage != "5eed" ||
		id.LineageIssuer != enroll.Issuer.String() || !id.Renewed {
		t.Fatalf("renewed identity %+v", id)
	}
	// Renewing the renewal keeps the enrollment's lineage.
	again, err := is.Reissue(chainOf(got, icert, root.cert), newKeyT(t).Public(), now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if id2 := pki.IdentityOf(again); id2.Lineage != "5eed" || id2.LineageIssuer != id.LineageIssuer || !bytes.Equal(again.RawSubject, enroll.RawSubject) {
		t.Fatalf("second renewal %+v", id2)
	}
	// A week-long certificate starts Backdate before now.
	week, err := is.Reissue(chainOf(got, icert, root.cert), newKeyT(t).Public(), now, 7*24*time.Hour)
	if err != nil || !week.NotBefore.Equal(now.Add(-Backdate).Truncate(time.Second)) {
		t.Fatalf("week: not before %v (%v), want %v", week.NotBefore, err, now.Add(-Backdate))
	}
	// The issuer's own end cuts the lifetime.
	long, err := is.Reissue(chainOf(got, icert, root.cert), newKeyT(t).Public(), now, 1000*time.Hour)
	if err != nil || !long.NotAfter.Equal(icert.NotAfter) {
		t.Fatalf("long lifetime: not after %v, want the issuer's %v (%v)", long.NotAfter, icert.NotAfter, err)
	}

	rsaWeak, _ := rsa.GenerateKey(rand.Reader, 1024)
	ca2 := root.enrollment(t)
	ca2.IsCA = true
	bad := []struct {
		name     string
		leaf     *x509.Certificate
		pub      crypto.PublicKey
		now      time.Time
		lifetime time.Duration
		want     string
	}{
		{"weak key", enroll, rsaWeak.Public(), now, time.Hour, "1024 bits"},
		{"CA leaf", ca2, newKeyT(t).Public(), now, time.Hour, "device certificate"},
		{"short life", enroll, newKeyT(t).Public(), now, time.Second, "shorter"},
		{"issuer expired", enroll, newKeyT(t).Public(), icert.NotAfter.Add(time.Minute), time.Hour, "expired"},
	}
	for _, tc := range bad {
		if _, err := is.Reissue(chainOf(tc.leaf, root.cert), tc.pub, tc.now, tc.lifetime); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

func newKeyT(t *testing.T) *ecdsa.PrivateKey { return newKey(t) }

// chainOf is a verified chain, leaf first, trust anchor last.
func chainOf(certs ...*x509.Certificate) []*x509.Certificate { return certs }

func TestCheckIssuer(t *testing.T) {
	root := newRoot(t)
	cases := []struct {
		name string
		edit func(*x509.Certificate)
		want string
	}{
		{"good", nil, ""},
		{"not a CA", func(c *x509.Certificate) { c.IsCA, c.MaxPathLenZero = false, false }, "not a CA"},
		{"path length 1", func(c *x509.Certificate) { c.MaxPathLenZero, c.MaxPathLen = false, 1 }, "path length 0"},
		{"no path length", func(c *x509.Certificate) { c.MaxPathLenZero, c.MaxPathLen = false, -1 }, "path length 0"},
		{"serverAuth", func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }, "only extended key usage"},
		{"clientAuth and serverAuth", func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}
		}, "only extended key usage"},
		{"no EKU", func(c *x509.Certificate) { c.ExtKeyUsage = nil }, "only extended key usage"},
		{"no certSign", func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }, "keyCertSign"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, k := root.issuer(t, tc.edit)
			_, err := New([]*x509.Certificate{c}, k)
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("New: %v, want %q", err, tc.want)
			}
		})
	}
	c, _ := root.issuer(t, nil)
	if _, err := New([]*x509.Certificate{c}, newKey(t)); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("mismatched key: %v", err)
	}
}

func writePEM(t *testing.T, path, typ string, der []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func TestLoad(t *testing.T) {
	root := newRoot(t)
	c, k := root.issuer(t, nil)
	dir := t.TempDir()
	crt, key := filepath.Join(dir, "issuer.crt"), filepath.Join(dir, "issuer.key")
	writePEM(t, crt, "CERTIFICATE", c.Raw, 0o644)
	kd, _ := x509.MarshalPKCS8PrivateKey(k)
	writePEM(t, key, "PRIVATE KEY", kd, 0o644)
	if _, err := Load(crt, key); err == nil || !strings.Contains(err.Error(), "issuer key") || !strings.Contains(err.Error(), "chmod") {
		t.Fatalf("world-readable issuer key: %v", err)
	}
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	is, err := Load(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	if !is.Cert().Equal(c) || len(is.Chain()) != 1 {
		t.Fatal("loaded another issuer")
	}
	if _, err := Load(filepath.Join(dir, "none.crt"), key); err == nil {
		t.Fatal("missing certificate accepted")
	}
}

// TestReissueKeyOrigin: only ReissueAttested carries a key origin, and only
// an attested one with its attestation key; a vouched-for origin (the
// admin's word for the first key) or a certificate without an AK gets
// nothing, and a plain Reissue drops the origin and the AK. Mutations
// caught: ReissueAttested without its own check of the leaf, and Reissue
// copying the AK extension.
func TestReissueKeyOrigin(t *testing.T) {
	root := newRoot(t)
	icert, ikey := root.issuer(t, nil)
	is, err := New([]*x509.Certificate{icert}, ikey)
	if err != nil {
		t.Fatal(err)
	}
	ak, _ := asn1.Marshal([]byte("the AK's TPM2B_PUBLIC"))
	vouched, _ := pki.KeyOriginPolicy(pki.KeyOriginTPM)
	token, _ := pki.KeyOriginPolicy(pki.KeyOriginPKCS11)
	leaf := func(policies []x509.OID, withAK bool) *x509.Certificate {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(0x5eed), Subject: pkix.Name{CommonName: "alice-laptop"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature, Policies: policies}
		if withAK {
			tmpl.ExtraExtensions = []pkix.Extension{{Id: pki.OIDAttestationKey, Value: ak}}
		}
		return sign(t, tmpl, root.cert, newKey(t).Public(), root.key)
	}
	attested := leaf([]x509.OID{pki.KeyOriginAttestedPolicy()}, true)
	now := time.Now()

	got, err := is.ReissueAttested(chainOf(attested, root.cert), newKey(t).Public(), now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !pki.KeyOriginAttested(got) || !bytes.Equal(pki.AttestationKeyOf(got), pki.AttestationKeyOf(attested)) {
		t.Fatalf("attested renewal: attested %v, AK %x", pki.KeyOriginAttested(got), pki.AttestationKeyOf(got))
	}
	plain, err := is.Reissue(chainOf(attested, root.cert), newKey(t).Public(), now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if pki.KeyOriginOf(plain) != "" || pki.AttestationKeyOf(plain) != nil {
		t.Fatalf("plain renewal of an attested certificate: origin %q, AK %x", pki.KeyOriginOf(plain), pki.AttestationKeyOf(plain))
	}
	for _, tc := range []struct {
		name string
		leaf *x509.Certificate
	}{
		{"vouched TPM origin with an AK extension", leaf([]x509.OID{vouched}, true)},
		{"attested origin without its AK", leaf([]x509.OID{pki.KeyOriginAttestedPolicy()}, false)},
		{"attested and token origins at once", leaf([]x509.OID{pki.KeyOriginAttestedPolicy(), token}, true)},
		{"no origin", leaf(nil, true)},
	} {
		if c, err := is.ReissueAttested(chainOf(tc.leaf, root.cert), newKey(t).Public(), now, time.Hour); err == nil {
			t.Errorf("%s: renewed as attested (%q)", tc.name, pki.KeyOriginOf(c))
		}
	}
}

// TestNextLineage: a renewal's lineage names the enrollment and every CA
// below the anchor that signed a certificate of it (the enrollment's
// intermediate, each online issuer), each once; a lineage extension is
// carried only from a certificate an online issuer signed, so one that
// another CA signed (copied from a request, forged) cannot move a
// device's renewals away from its enrollment. Mutations caught: carrying
// the extension whatever signed it, CAs not gathered, gathered twice, the
// trust anchor gathered, no bound.
func TestNextLineage(t *testing.T) {
	root := newRoot(t)
	interKey := newKey(t)
	inter := sign(t, &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "Acme Issuing CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign}, root.cert, interKey.Public(), root.key)
	byInter := func(serial int64, exts ...pkix.Extension) *x509.Certificate {
		return sign(t, &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "alice-laptop"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtraExtensions: exts,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, inter, newKey(t).Public(), interKey)
	}
	icert, ikey := root.issuer(t, nil)
	is, _ := New([]*x509.Certificate{icert}, ikey)
	icert2, ikey2 := root.issuer(t, func(c *x509.Certificate) { c.SerialNumber = big.NewInt(9) })
	is2, _ := New([]*x509.Certificate{icert2}, ikey2)
	serials := func(l pki.Lineage) string {
		var out []string
		for _, s := range l.CAs {
			out = append(out, s.String())
		}
		return l.Serial.String() + ":" + strings.Join(out, ",")
	}
	lineage := func(c *x509.Certificate) pki.Lineage {
		l, _, err := pki.LineageOf(c)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	now := time.Now()
	enroll := byInter(0x5eed)
	r1, err := is.Reissue(chainOf(enroll, inter, root.cert), newKey(t).Public(), now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := serials(lineage(r1)); got != "24301:3" || !bytes.Equal(lineage(r1).RawIssuer, inter.RawSubject) {
		t.Fatalf("first renewal: lineage %s, want the enrollment 24301 and its intermediate 3", got)
	}
	r2, _ := is.Reissue(chainOf(r1, icert, root.cert), newKey(t).Public(), now, time.Hour)
	r3, _ := is.Reissue(chainOf(r2, icert, root.cert), newKey(t).Public(), now, time.Hour)
	r4, _ := is2.Reissue(chainOf(r3, icert, root.cert), newKey(t).Public(), now, time.Hour)
	r5, _ := is2.Reissue(chainOf(r4, icert2, root.cert), newKey(t).Public(), now, time.Hour)
	for _, tc := range []struct {
		c    *x509.Certificate
		want string
	}{{r2, "24301:3,2"}, {r3, "24301:3,2"}, {r4, "24301:3,2"}, {r5, "24301:3,2,9"}} {
		if got := serials(lineage(tc.c)); got != tc.want {
			t.Errorf("lineage %s, want %s", got, tc.want)
		}
	}

	// Every CA between the enrollment and the anchor: a sub-CA of the
	// intermediate too.
	subKey := newKey(t)
	sub := sign(t, &x509.Certificate{SerialNumber: big.NewInt(4), Subject: pkix.Name{CommonName: "Acme Sub CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, inter, subKey.Public(), interKey)
	deep := sign(t, &x509.Certificate{SerialNumber: big.NewInt(0xdee9), Subject: pkix.Name{CommonName: "alice-laptop"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, sub, newKey(t).Public(), subKey)
	if l, err := NextLineage(chainOf(deep, sub, inter, root.cert)); err != nil || serials(l) != "57065:4,3" {
		t.Fatalf("lineage of an enrollment two CAs below the anchor: %s (%v), want 57065:4,3", serials(l), err)
	}

	// A lineage extension another CA signed is not carried.
	forged, _ := pki.LineageExtension(pki.Lineage{Serial: big.NewInt(1), RawIssuer: root.cert.RawSubject})
	copied := byInter(0xc0b1, forged)
	if l, err := NextLineage(chainOf(copied, inter, root.cert)); err != nil || serials(l) != "49329:3" {
		t.Fatalf("lineage of a certificate with a lineage another CA signed: %s (%v), want its own serial 49329", serials(l), err)
	}
	// Nor is anything of a lineage gathered past the bound.
	var many []*big.Int
	for i := range pki.MaxLineageCAs {
		many = append(many, big.NewInt(int64(100+i)))
	}
	full, _ := pki.LineageExtension(pki.Lineage{Serial: big.NewInt(0x5eed), RawIssuer: inter.RawSubject, CAs: many})
	long := sign(t, &x509.Certificate{SerialNumber: big.NewInt(77), Subject: pkix.Name{CommonName: "alice-laptop"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtraExtensions: []pkix.Extension{full},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, icert, newKey(t).Public(), ikey)
	if _, err := is2.Reissue(chainOf(long, icert, root.cert), newKey(t).Public(), now, time.Hour); err == nil || !strings.Contains(err.Error(), "enroll the device again") {
		t.Fatalf("a lineage past %d CAs: %v", pki.MaxLineageCAs, err)
	}
}
