package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

// leafWith issues a device certificate from ca with extra extensions.
func (ca *testCA) leafWith(t testing.TB, serial int64, exts ...pkix.Extension) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "alice-laptop", OrganizationalUnit: []string{"eng"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, ExtraExtensions: exts,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLineage(t *testing.T) {
	root := newTestCA(t, "Acme Root")
	enroll := root.leafWith(t, 0x5eed)
	l, renewed, err := LineageOf(enroll)
	if err != nil || renewed || l.Serial.Cmp(big.NewInt(0x5eed)) != 0 || !bytes.Equal(l.RawIssuer, enroll.RawIssuer) {
		t.Fatalf("enrollment: lineage %v renewed %v err %v", l, renewed, err)
	}
	id := IdentityOf(enroll)
	if id.Lineage != "5eed" || id.LineageIssuer != id.Issuer || id.Renewed {
		t.Fatalf("enrollment identity %+v", id)
	}

	ext, err := LineageExtension(l)
	if err != nil {
		t.Fatal(err)
	}
	if ext.Critical {
		t.Fatal("the lineage extension must be non-critical")
	}
	issuer := newTestCA(t, "Acme Online Issuer")
	renewedCert := issuer.leafWith(t, 0xabcdef, ext)
	l2, renewed, err := LineageOf(renewedCert)
	if err != nil || !renewed || l2.Serial.Cmp(l.Serial) != 0 || !bytes.Equal(l2.RawIssuer, enroll.RawIssuer) {
		t.Fatalf("renewed: lineage %v renewed %v err %v", l2, renewed, err)
	}
	id = IdentityOf(renewedCert)
	// The lineage issuer reads exactly like the enrollment's Issuer, so
	// keys built from it (the gateway's device key) stay the same.
	if id.Lineage != "5eed" || id.LineageIssuer != IdentityOf(enroll).Issuer || !id.Renewed || id.Issuer == id.LineageIssuer {
		t.Fatalf("renewed identity %+v", id)
	}

	bad := []struct {
		name string
		exts []pkix.Extension
		want string
	}{
		{"garbage", []pkix.Extension{{Id: OIDLineage, Value: []byte{0x30, 0x03, 0x02, 0x01}}}, "lineage extension"},
		{"critical", []pkix.Extension{{Id: OIDLineage, Critical: true, Value: ext.Value}}, "critical"},
		{"zero serial", []pkix.Extension{{Id: OIDLineage, Value: mustMarshal(t, lineageASN1{Serial: big.NewInt(0), Issuer: asn1.RawValue{FullBytes: enroll.RawIssuer}})}}, "not positive"},
		{"trailing", []pkix.Extension{{Id: OIDLineage, Value: append(bytes.Clone(ext.Value), 0)}}, "trailing"},
		{"issuer not a name", []pkix.Extension{{Id: OIDLineage, Value: mustMarshal(t, lineageASN1{Serial: big.NewInt(1), Issuer: asn1.RawValue{FullBytes: []byte{0x04, 0x01, 0x00}}})}}, "issuer"},
		{"CA serial zero", []pkix.Extension{{Id: OIDLineage, Value: mustMarshal(t, lineageASN1{Serial: big.NewInt(1), Issuer: asn1.RawValue{FullBytes: enroll.RawIssuer}, CAs: []*big.Int{big.NewInt(0)}})}}, "not positive"},
		{"too many CAs", []pkix.Extension{{Id: OIDLineage, Value: mustMarshal(t, lineageASN1{Serial: big.NewInt(1), Issuer: asn1.RawValue{FullBytes: enroll.RawIssuer}, CAs: make17()})}}, "at most"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			c := issuer.leafWith(t, 7, tc.exts...)
			_, renewed, err := LineageOf(c)
			if err == nil || !renewed || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LineageOf: renewed %v err %v, want an error with %q", renewed, err, tc.want)
			}
			if id := IdentityOf(c); id.Lineage != "" || !id.Renewed {
				t.Fatalf("identity of an unreadable lineage %+v: want no lineage, renewed", id)
			}
		})
	}
	if _, err := LineageExtension(Lineage{Serial: big.NewInt(1), RawIssuer: []byte{1, 2}}); err == nil {
		t.Fatal("LineageExtension accepted an issuer that is not a name")
	}
}

func make17() []*big.Int {
	var out []*big.Int
	for i := range MaxLineageCAs + 1 {
		out = append(out, big.NewInt(int64(i+1)))
	}
	return out
}

// TestLineageCAs: the CAs of a lineage survive encoding, a lineage of an
// earlier release (serial and issuer only) still reads, with no CAs, and
// LineageExtension refuses what LineageOf would.
func TestLineageCAs(t *testing.T) {
	root := newTestCA(t, "Acme Root")
	l := Lineage{Serial: big.NewInt(0x5eed), RawIssuer: root.cert.RawSubject, CAs: []*big.Int{big.NewInt(3), big.NewInt(2)}}
	ext, err := LineageExtension(l)
	if err != nil {
		t.Fatal(err)
	}
	got, renewed, err := LineageOf(root.leafWith(t, 8, ext))
	if err != nil || !renewed || len(got.CAs) != 2 || got.CAs[0].Int64() != 3 || got.CAs[1].Int64() != 2 {
		t.Fatalf("lineage with CAs read back as %+v (%v)", got, err)
	}
	old := mustMarshal(t, struct {
		Serial *big.Int
		Issuer asn1.RawValue
	}{big.NewInt(0x5eed), asn1.RawValue{FullBytes: root.cert.RawSubject}})
	got, _, err = LineageOf(root.leafWith(t, 9, pkix.Extension{Id: OIDLineage, Value: old}))
	if err != nil || got.Serial.Int64() != 0x5eed || len(got.CAs) != 0 {
		t.Fatalf("lineage without CAs read as %+v (%v)", got, err)
	}
	if _, err := LineageExtension(Lineage{Serial: big.NewInt(1), RawIssuer: root.cert.RawSubject, CAs: make17()}); err == nil {
		t.Fatal("LineageExtension encoded more CAs than LineageOf reads")
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// tlsPair returns both ends of a TLS 1.3 session over a socket pair.
func tlsPair(t *testing.T) (cli, srv *tls.Conn) {
	t.Helper()
	ca := newTestCA(t, "Pair CA")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "gw"}, DNSNames: []string{"gw"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	a, b := net.Pipe()
	srv = tls.Server(b, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	cli = tls.Client(a, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: NewPool([]*x509.Certificate{ca.cert}), ServerName: "gw"})
	errc := make(chan error, 1)
	go func() { errc <- srv.Handshake() }()
	if err := cli.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return cli, srv
}

func TestRenewalRequest(t *testing.T) {
	cli, srv := tlsPair(t)
	bc, err := RenewalBinding(cli.ConnectionState())
	if err != nil {
		t.Fatal(err)
	}
	bs, _ := RenewalBinding(srv.ConnectionState())
	if !bytes.Equal(bc, bs) || len(bc) != RenewalBindingLen {
		t.Fatalf("the two ends derive different bindings")
	}
	cli2, _ := tlsPair(t)
	other, _ := RenewalBinding(cli2.ConnectionState())

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := NewRenewalRequest(key, "alice-laptop", bc)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := CheckRenewalRequest(der, bs)
	if err != nil {
		t.Fatal(err)
	}
	if !SamePublicKey(csr.PublicKey, key.Public()) {
		t.Fatal("request carries another key")
	}
	// Replayed on another session: refused.
	if _, err := CheckRenewalRequest(der, other); !errors.Is(err, ErrRenewalBinding) {
		t.Fatalf("request from another session: %v, want ErrRenewalBinding", err)
	}

	edKey := func() ed25519.PrivateKey { _, k, _ := ed25519.GenerateKey(rand.Reader); return k }()
	if der, err := NewRenewalRequest(edKey, "x", bc); err != nil {
		t.Fatal(err)
	} else if _, err := CheckRenewalRequest(der, bc); err != nil {
		t.Fatalf("ed25519 request: %v", err)
	}

	// Hand-made requests a thief might send.
	csrWith := func(k any, exts ...pkix.Extension) []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "root"}, ExtraExtensions: exts}, k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	bind := func(b []byte) pkix.Extension { return pkix.Extension{Id: OIDRenewalBinding, Value: mustMarshal(t, b)} }
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	tampered := bytes.Clone(der)
	tampered[len(tampered)-5] ^= 1
	cases := []struct {
		name string
		der  []byte
		want string
	}{
		{"no binding", csrWith(key), "not bound"},
		{"short binding", csrWith(key, bind(bs[:16])), "not bound"},
		{"binding not an octet string", csrWith(key, pkix.Extension{Id: OIDRenewalBinding, Value: []byte{0x02, 0x01, 0x01}}), "not bound"},
		{"weak RSA", csrWith(weak, bind(bs)), "1024 bits"},
		{"P-224", csrWith(p224, bind(bs)), "P-224"},
		{"bad signature", tampered, "signature"},
		{"empty", nil, "0 bytes"},
		{"huge", make([]byte, MaxRenewalRequest+1), "bytes"},
		{"garbage", []byte{0x30, 0x01, 0x00}, "renewal request"},
	}
	for _, tc := range cases {
		if _, err := CheckRenewalRequest(tc.der, bs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	if _, err := NewRenewalRequest(key, "x", bc[:5]); err == nil {
		t.Error("NewRenewalRequest with a short binding")
	}
}

// FuzzRenewalRequest: any bytes as a renewal request never panic, and
// nothing without this session's binding is accepted.
func FuzzRenewalRequest(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	binding := bytes.Repeat([]byte{7}, RenewalBindingLen)
	der, _ := NewRenewalRequest(key, "alice", binding)
	f.Add(der)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		csr, err := CheckRenewalRequest(in, binding)
		if err == nil && csr.PublicKey == nil {
			t.Fatal("accepted a request without a key")
		}
		if _, err := CheckRenewalRequest(in, make([]byte, RenewalBindingLen)); err == nil {
			t.Fatal("accepted a request under a binding it was not made for")
		}
	})
}

// FuzzLineage: any bytes as a lineage extension never panic; what decodes
// re-encodes to the same bytes.
func FuzzLineage(f *testing.F) {
	l := Lineage{Serial: big.NewInt(0x5eed), RawIssuer: mustMarshalF(f, pkix.Name{CommonName: "CA"}.ToRDNSequence())}
	ext, _ := LineageExtension(l)
	f.Add(ext.Value)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		l, err := parseLineage(in)
		if err != nil {
			return
		}
		ext, err := LineageExtension(l)
		if err != nil {
			t.Fatalf("decoded lineage does not encode: %v", err)
		}
		if _, err := parseLineage(ext.Value); err != nil {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func mustMarshalF(f *testing.F, v any) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		f.Fatal(err)
	}
	return b
}
