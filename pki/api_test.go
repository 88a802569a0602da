package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{c, key}
}

func (ca *testCA) leaf(t testing.TB, serial *big.Int, subj pkix.Name) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber:   serial,
		Subject:        subj,
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(time.Hour),
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:       []string{"a.example"},
		EmailAddresses: []string{"alice@example.com"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func (ca *testCA) crl(t testing.TB, next time.Time, serials ...*big.Int) []byte {
	t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now(), ReasonCode: 1})
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(1), ThisUpdate: time.Now(), NextUpdate: next,
		RevokedCertificateEntries: entries,
	}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

func TestIdentityOf(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	subj := pkix.Name{
		CommonName: "alice-laptop", OrganizationalUnit: []string{"eng", "ops"}, Organization: []string{"Acme"},
		ExtraNames: []pkix.AttributeTypeAndValue{{Type: OIDUserID, Value: "alice"}},
	}
	c := ca.leaf(t, big.NewInt(0xabcdef), subj)
	id := IdentityOf(c)
	if id.Device != "alice-laptop" || id.User != "alice" || strings.Join(id.Groups, ",") != "eng,ops" ||
		strings.Join(id.Orgs, ",") != "Acme" || id.Serial != "abcdef" || id.Issuer != "CN=Test CA" ||
		len(id.Fingerprint) != 64 || id.DNSNames[0] != "a.example" || id.Emails[0] != "alice@example.com" {
		t.Fatalf("identity = %+v", id)
	}
	if id.Subject != "CN=alice-laptop,OU=eng+OU=ops,O=Acme,UID=alice" {
		t.Errorf("subject %q, want the user as UID=alice", id.Subject)
	}
	if z := IdentityOf(nil); z.Device != "" || z.Serial != "" || z.Fingerprint != "" || z.Groups != nil {
		t.Error("nil cert should give zero identity")
	}
	if UserOf(ca.cert) != "" {
		t.Error("CA has no user")
	}
}

// NameString names UID, DC and emailAddress where pkix.Name.String prints
// an OID and hex, escapes their values as it does the others, and leaves
// everything else as pkix.Name.String has it.
func TestNameString(t *testing.T) {
	dc := asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}
	email := asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}
	other := asn1.ObjectIdentifier{1, 2, 3, 4}
	ca := newTestCA(t, "Test CA")
	for _, tt := range []struct {
		extra  []pkix.AttributeTypeAndValue
		parsed string   // NameString of the subject parsed from a certificate
		attrs  []string // in the name as built (ExtraNames) too
	}{
		{nil, "CN=alice-laptop,OU=eng", nil},
		{[]pkix.AttributeTypeAndValue{{Type: OIDUserID, Value: "alice"}}, "CN=alice-laptop,OU=eng,UID=alice", []string{"UID=alice"}},
		{[]pkix.AttributeTypeAndValue{{Type: OIDUserID, Value: "O'Brien, Pat"}}, `CN=alice-laptop,OU=eng,UID=O'Brien\, Pat`, []string{`UID=O'Brien\, Pat`}},
		{[]pkix.AttributeTypeAndValue{{Type: OIDUserID, Value: "#x "}}, `CN=alice-laptop,OU=eng,UID=\#x\ `, []string{`UID=\#x\ `}},
		{[]pkix.AttributeTypeAndValue{{Type: dc, Value: "corp"}, {Type: email, Value: "it@corp.example"}},
			"CN=alice-laptop,OU=eng,emailAddress=it@corp.example,DC=corp", []string{"DC=corp", "emailAddress=it@corp.example"}},
		// An attribute it does not know stays as pkix.Name.String has it.
		{[]pkix.AttributeTypeAndValue{{Type: other, Value: "x"}}, "CN=alice-laptop,OU=eng,1.2.3.4=#130178", []string{"1.2.3.4=#130178"}},
	} {
		built := pkix.Name{CommonName: "alice-laptop", OrganizationalUnit: []string{"eng"}, ExtraNames: tt.extra}
		c := ca.leaf(t, big.NewInt(7), built)
		if got := NameString(c.Subject); got != tt.parsed {
			t.Errorf("parsed: NameString = %q, want %q", got, tt.parsed)
		}
		got := NameString(built)
		for _, a := range tt.attrs {
			if !strings.Contains(got, a) {
				t.Errorf("built: NameString = %q, want %q in it", got, a)
			}
		}
	}
}

func TestFingerprint(t *testing.T) {
	ca := newTestCA(t, "FP CA")
	fp := Fingerprint(ca.cert)
	if fp != strings.ToLower(fp) || strings.Contains(fp, ":") || len(fp) != 64 {
		t.Fatalf("fingerprint %q", fp)
	}
	colons := strings.ToUpper(fp[:2])
	for i := 2; i < len(fp); i += 2 {
		colons += ":" + strings.ToUpper(fp[i:i+2])
	}
	good := []string{fp, strings.ToUpper(fp), colons, "sha256:" + fp, "SHA256 Fingerprint=" + colons, "  " + fp + "\n"}
	for _, s := range good {
		got, err := NormalizeFingerprint(s)
		if err != nil || got != fp {
			t.Errorf("NormalizeFingerprint(%q) = %q, %v", s, got, err)
		}
	}
	for _, s := range []string{"", fp[:62], fp + "00", "zz" + fp[2:], "sha1:" + fp} {
		if _, err := NormalizeFingerprint(s); err == nil {
			t.Errorf("NormalizeFingerprint(%q) accepted", s)
		}
	}
	if Fingerprint(nil) != "" {
		t.Error("nil fingerprint")
	}
}

func TestParseSerial(t *testing.T) {
	tests := []struct {
		in   string
		want string // canonical, "" = error
	}{
		{"5a3b01", "5a3b01"},
		{"5A:3B:01", "5a3b01"},
		{"5a 3b 01", "5a3b01"},
		{"0x5A3B01", "5a3b01"},
		{"serial=5A3B01", "5a3b01"},
		{"  00:5a:3b:01 ", "5a3b01"},
		{"123", "123"},
		{"d:291", "123"},
		{"DEC:291", "123"},
		{"0", "0"},
		{"", ""},
		{"0x", ""},
		{"d:", ""},
		{"d:12a", ""},
		{"-5", ""},
		{"xyz", ""},
		{"d:1:2", ""},
		{strings.Repeat("f", 300), ""},
	}
	for _, tt := range tests {
		n, err := ParseSerial(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("ParseSerial(%q) = %v, want error", tt.in, n)
			}
			continue
		}
		if err != nil || FormatSerial(n) != tt.want {
			t.Errorf("ParseSerial(%q) = %v, %v; want %s", tt.in, n, err, tt.want)
		}
	}
	if FormatSerial(nil) != "" || FormatSerial(big.NewInt(-10)) != "-a" {
		t.Error("FormatSerial edge cases")
	}
}

func TestParseCertificatesPEM(t *testing.T) {
	a, b := newTestCA(t, "A"), newTestCA(t, "B")
	data := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.cert.Raw}), "junk text\n"...)
	data = append(data, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})...)
	data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.cert.Raw})...)
	certs, err := ParseCertificatesPEM(data)
	if err != nil || len(certs) != 2 || certs[1].Subject.CommonName != "B" {
		t.Fatalf("got %d certs, %v", len(certs), err)
	}
	pool := NewPool([]*x509.Certificate{a.cert, nil})
	if _, err := a.leaf(t, big.NewInt(2), pkix.Name{CommonName: "x"}).Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("verify against pool: %v", err)
	}
	for name, bad := range map[string][]byte{
		"empty":   nil,
		"der":     a.cert.Raw,
		"garbage": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("nope")}),
		"keyonly": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}),
	} {
		if _, err := ParseCertificatesPEM(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "ca.crt")
	os.WriteFile(p, data, 0o644)
	if certs, err := LoadCertificates(p); err != nil || len(certs) != 2 {
		t.Errorf("LoadCertificates: %v", err)
	}
	if _, err := LoadCertificates(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing file error: %v", err)
	}
}

func TestCRL(t *testing.T) {
	root, other := newTestCA(t, "Root"), newTestCA(t, "Other")
	next := time.Now().Add(48 * time.Hour).Truncate(time.Second).UTC()
	revoked := root.leaf(t, big.NewInt(0x1234), pkix.Name{CommonName: "bob"})
	fine := root.leaf(t, big.NewInt(0x5678), pkix.Name{CommonName: "carol"})
	// Same serial from another issuer must not be affected.
	twin := other.leaf(t, big.NewInt(0x1234), pkix.Name{CommonName: "bob"})
	data := root.crl(t, next, big.NewInt(0x1234))
	rl, err := ParseCRL(data, []*x509.Certificate{other.cert, root.cert})
	if err != nil {
		t.Fatal(err)
	}
	if ok, reason := rl.Revoked(revoked); !ok || reason != "keyCompromise" {
		t.Errorf("revoked = %v %q", ok, reason)
	}
	if ok, _ := rl.Revoked(fine); ok {
		t.Error("fine cert revoked")
	}
	if ok, _ := rl.Revoked(twin); ok {
		t.Error("same serial from other issuer revoked")
	}
	if !rl.NextUpdate().Equal(next) || rl.Len() != 1 || len(rl.CRLs()) != 1 || !revokedSerial(rl, big.NewInt(0x1234)) {
		t.Errorf("NextUpdate %v Len %d", rl.NextUpdate(), rl.Len())
	}
	var nilRL *RevocationList
	if ok, _ := nilRL.Revoked(revoked); ok || !nilRL.NextUpdate().IsZero() || nilRL.Len() != 0 {
		t.Error("nil list")
	}
	// Two CRLs in one file; DER form.
	both := append(append([]byte{}, data...), other.crl(t, next.Add(time.Hour), big.NewInt(9))...)
	if rl, err := ParseCRL(both, []*x509.Certificate{root.cert, other.cert}); err != nil || rl.Len() != 2 || !rl.NextUpdate().Equal(next) {
		t.Errorf("two CRLs: %v", err)
	}
	blk, _ := pem.Decode(data)
	if _, err := ParseCRL(blk.Bytes, []*x509.Certificate{root.cert}); err != nil {
		t.Errorf("DER CRL: %v", err)
	}
	// Refusals.
	if _, err := ParseCRL(data, []*x509.Certificate{other.cert}); !errors.Is(err, ErrNoIssuer) {
		t.Errorf("wrong issuer: %v", err)
	}
	if _, err := ParseCRL(both, []*x509.Certificate{root.cert}); !errors.Is(err, ErrNoIssuer) {
		t.Errorf("one CRL untrusted: %v", err)
	}
	// Same name, different key: signature must fail.
	impostor := newTestCA(t, "Root")
	if _, err := ParseCRL(impostor.crl(t, next), []*x509.Certificate{root.cert}); !errors.Is(err, ErrNoIssuer) {
		t.Errorf("impostor: %v", err)
	}
	for name, bad := range map[string][]byte{"empty": nil, "garbage": []byte("garbage"), "cert-only": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.cert.Raw})} {
		if _, err := ParseCRL(bad, []*x509.Certificate{root.cert}); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "crl.pem")
	os.WriteFile(p, data, 0o644)
	if _, err := LoadCRL(p, []*x509.Certificate{root.cert}); err != nil {
		t.Error(err)
	}
	if _, err := LoadCRL(p+"x", []*x509.Certificate{root.cert}); err == nil {
		t.Error("missing CRL accepted")
	}
}

func TestReasons(t *testing.T) {
	for _, tt := range []struct {
		in   string
		code int
		ok   bool
	}{{"keyCompromise", 1, true}, {"KEYCOMPROMISE", 1, true}, {"superseded", 4, true}, {"4", 4, true}, {"unspecified", 0, true},
		{"removeFromCRL", 0, false}, {"bogus", 0, false}, {"", 0, false}, {"7", 0, false}} {
		code, err := ParseReason(tt.in)
		if (err == nil) != tt.ok || code != tt.code {
			t.Errorf("ParseReason(%q) = %d, %v", tt.in, code, err)
		}
	}
	if ReasonString(1) != "keyCompromise" || ReasonString(7) != "reason(7)" || ReasonString(-1) != "reason(-1)" {
		t.Error("ReasonString")
	}
}

func revokedSerial(rl *RevocationList, n *big.Int) bool { ok, _ := rl.RevokedSerial(n); return ok }
