package ca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	bolt "go.etcd.io/bbolt"

	"github.com/sallyport/sallyport/pki"
)

// TestInitRefusesExistingCA: Init never touches a directory that holds any
// part of a CA, whichever part it is.
func TestInitRefusesExistingCA(t *testing.T) {
	for _, f := range []string{"root.crt", "root.key", "ca.crt", "intermediate.key", indexDB, legacyIndex} {
		t.Run(f, func(t *testing.T) {
			dir := t.TempDir()
			old := []byte("precious " + f)
			if err := os.WriteFile(filepath.Join(dir, f), old, 0o600); err != nil {
				t.Fatal(err)
			}
			err := New(dir).Init(InitOptions{Key: KeyEd25519})
			if err == nil || !strings.Contains(err.Error(), "refusing to overwrite") || !strings.Contains(err.Error(), f) {
				t.Fatalf("Init over %s: %v", f, err)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, f)); !bytes.Equal(b, old) {
				t.Errorf("%s changed to %q", f, b)
			}
			if _, err := os.Stat(filepath.Join(dir, "root.crt")); f != "root.crt" && err == nil {
				t.Errorf("Init wrote root.crt next to an existing %s", f)
			}
		})
	}
	p := newTestPKI(t)
	before, _ := os.ReadFile(p.Path("root.crt"))
	if err := p.Init(InitOptions{Key: KeyEd25519}); err == nil {
		t.Fatal("second Init succeeded")
	}
	if after, _ := os.ReadFile(p.Path("root.crt")); !bytes.Equal(before, after) {
		t.Error("second Init replaced the root")
	}
}

// TestValidityClampedToIssuer: nothing outlives the CA that signs it; an
// explicit end past the CA is an error, a default one is shortened with a
// warning.
func TestValidityClampedToIssuer(t *testing.T) {
	now := time.Date(2031, 3, 1, 12, 0, 0, 0, time.UTC)
	p := New(t.TempDir())
	p.Now = func() time.Time { return now }
	if err := p.Init(InitOptions{Key: KeyEd25519, Intermediate: true, Days: 30, Org: "Acme", Name: "Acme CA"}); err != nil {
		t.Fatal(err)
	}
	roots, inter, err := p.Roots()
	if err != nil || len(roots) != 1 || len(inter) != 1 {
		t.Fatalf("Roots: %d %d %v", len(roots), len(inter), err)
	}
	root, iss := roots[0], inter[0]
	if !iss.NotAfter.Equal(root.NotAfter) {
		t.Errorf("intermediate ends %v, after its root's %v", iss.NotAfter, root.NotAfter)
	}
	if root.Subject.CommonName != "Acme CA" || !slices.Equal(root.Subject.Organization, []string{"Acme"}) || iss.Subject.CommonName != "Acme CA Issuing CA" {
		t.Errorf("subjects %v / %v", root.Subject, iss.Subject)
	}
	if err := iss.CheckSignatureFrom(root); err != nil {
		t.Errorf("intermediate not signed by the root: %v", err)
	}

	d, err := p.IssueDevice(IssueOptions{Name: "long", Key: KeyEd25519, Days: 365})
	if err != nil {
		t.Fatal(err)
	}
	if !d.Cert.NotAfter.Equal(iss.NotAfter) || len(d.Warnings) != 1 || !strings.Contains(d.Warnings[0], "shortened") {
		t.Errorf("365 days under a 30-day CA: not after %v (CA %v), warnings %q", d.Cert.NotAfter, iss.NotAfter, d.Warnings)
	}
	if want := now.Add(-backdate); !d.Cert.NotBefore.Equal(want) {
		t.Errorf("not before %v, want %v (backdated)", d.Cert.NotBefore, want)
	}
	short, err := p.IssueDevice(IssueOptions{Name: "short", Key: KeyEd25519, Days: 7})
	if err != nil || !short.Cert.NotAfter.Equal(now.AddDate(0, 0, 7)) || len(short.Warnings) != 0 {
		t.Errorf("7 days: %v %v %v", short.Cert.NotAfter, short.Warnings, err)
	}
	nb := now.Add(24 * time.Hour)
	later, err := p.IssueDevice(IssueOptions{Name: "later", Key: KeyEd25519, Days: 2, NotBefore: nb})
	if err != nil || !later.Cert.NotBefore.Equal(nb) || !later.Cert.NotAfter.Equal(nb.AddDate(0, 0, 2)) {
		t.Errorf("not before +1d for 2 days: %v..%v %v", later.Cert.NotBefore, later.Cert.NotAfter, err)
	}
	for _, tt := range []struct {
		name string
		o    IssueOptions
		want string
	}{
		{"explicit end past the CA", IssueOptions{NotAfter: iss.NotAfter.Add(time.Second)}, "past the issuing CA's own expiry"},
		{"end before start", IssueOptions{NotBefore: now, NotAfter: now.Add(-time.Hour)}, "is not after not-before"},
		{"empty group", IssueOptions{Groups: []string{"eng", " "}}, "empty group name"},
		{"bad name", IssueOptions{Name: "../etc"}, "invalid device name"},
	} {
		o := tt.o
		if o.Name == "" {
			o.Name = "x"
		}
		o.Key = KeyEd25519
		if _, err := p.IssueDevice(o); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	if _, err := os.Stat(p.DeviceCertPath("x")); err == nil {
		t.Error("a refused issue left a certificate file")
	}
}

// TestIssueServerNames: a server certificate names its host (DNS or IP SAN),
// once, plus the extras; serverAuth only.
func TestIssueServerNames(t *testing.T) {
	p := newTestPKI(t)
	s, err := p.IssueServer(IssueOptions{Name: "vpn.example.com", Key: KeyEd25519, DNSNames: []string{"vpn.example.com", "alt.example.com"}, IPs: []net.IP{net.ParseIP("192.0.2.1")}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Cert.DNSNames, []string{"vpn.example.com", "alt.example.com"}) || len(s.Cert.IPAddresses) != 1 {
		t.Errorf("SANs %v %v", s.Cert.DNSNames, s.Cert.IPAddresses)
	}
	if !slices.Equal(s.Cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || s.Cert.IsCA {
		t.Errorf("EKU %v CA %v", s.Cert.ExtKeyUsage, s.Cert.IsCA)
	}
	if s.CertPath != p.ServerCertPath("vpn.example.com") || s.KeyPath != p.ServerKeyPath("vpn.example.com") {
		t.Errorf("paths %s %s", s.CertPath, s.KeyPath)
	}
	ip, err := p.IssueServer(IssueOptions{Name: "198.51.100.7", Key: KeyRSA3072})
	if err != nil {
		t.Fatal(err)
	}
	if len(ip.Cert.DNSNames) != 0 || len(ip.Cert.IPAddresses) != 1 || !ip.Cert.IPAddresses[0].Equal(net.ParseIP("198.51.100.7")) {
		t.Errorf("IP-named server: DNS %v IP %v", ip.Cert.DNSNames, ip.Cert.IPAddresses)
	}
	if ip.Cert.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		t.Error("RSA server certificate without keyEncipherment")
	}
	// The chain file carries the intermediate after the leaf.
	chain, err := pki.LoadCertificates(s.CertPath)
	if err != nil || len(chain) != 2 || chain[1].Subject.String() != s.Record.Issuer {
		t.Errorf("chain file: %d certs, %v", len(chain), err)
	}
}

// makeCSR returns a PEM CSR for subject signed by a new P-256 key.
func makeCSR(t *testing.T, subj pkix.Name, dns ...string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subj, DNSNames: dns}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestSignCSR(t *testing.T) {
	p := newTestPKI(t)
	good := makeCSR(t, pkix.Name{CommonName: "alice-laptop", Organization: []string{"Evil"}}, "gateway.example.com")
	blk, _ := pem.Decode(good)          // a decoded copy: good stays intact
	blk.Bytes[len(blk.Bytes)-5] ^= 0xff // inside the signature
	tampered := pem.EncodeToMemory(blk)
	twoCN := makeCSR(t, pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidCommonName, Value: "alice-laptop"}, {Type: oidCommonName, Value: "bob-laptop"}}})
	weakKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "weak"}}, weakKey)
	if err != nil {
		t.Fatal(err)
	}
	weak := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: weakDER})
	for _, tt := range []struct {
		name string
		csr  []byte
		o    IssueOptions
		want string
	}{
		{"not PEM", []byte("hello"), IssueOptions{Name: "alice-laptop"}, "no PEM"},
		{"a certificate, not a CSR", encodeCert(mustIssuer(t, p)), IssueOptions{Name: "alice-laptop"}, "no PEM"},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{1, 2, 3}}), IssueOptions{Name: "alice-laptop"}, "parse CSR"},
		{"bad signature", tampered, IssueOptions{Name: "alice-laptop"}, "signature invalid"},
		{"no device name", good, IssueOptions{}, "name the device"},
		{"CN of another device", good, IssueOptions{Name: "bob-laptop"}, `CN "alice-laptop" is not the device name "bob-laptop"`},
		{"two CNs", twoCN, IssueOptions{Name: "alice-laptop"}, "has 2 CNs"},
		{"two CNs with override", twoCN, IssueOptions{Name: "alice-laptop", OverrideCN: true}, "has 2 CNs"},
		{"no CN", makeCSR(t, pkix.Name{Organization: []string{"x"}}), IssueOptions{Name: "alice-laptop"}, "has no CN"},
		{"weak RSA key", weak, IssueOptions{Name: "weak"}, "too weak"},
	} {
		if _, err := p.SignCSR(tt.csr, tt.o); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	if recs, _ := p.List(); len(recs) != 1 { // the intermediate only
		t.Fatalf("refused CSRs were recorded: %d records", len(recs))
	}

	is, err := p.SignCSR(good, IssueOptions{Name: "alice-laptop", User: "alice", Groups: []string{"eng"}})
	if err != nil {
		t.Fatal(err)
	}
	c := is.Cert
	if c.Subject.CommonName != "alice-laptop" || len(c.Subject.Organization) != 0 || len(c.DNSNames) != 0 || c.IsCA ||
		!slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || !slices.Equal(c.Subject.OrganizationalUnit, []string{"eng"}) {
		t.Errorf("signed certificate took what the CSR asked for: subject %v DNS %v CA %v EKU %v", c.Subject, c.DNSNames, c.IsCA, c.ExtKeyUsage)
	}
	if is.KeyPath != "" || !is.Record.FromCSR || is.Record.User != "alice" {
		t.Errorf("CSR issue: key path %q, record %+v", is.KeyPath, is.Record)
	}
	if _, err := os.Stat(p.DeviceKeyPath("alice-laptop")); err == nil {
		t.Error("a key file was written for a CSR")
	}
	// The admin may name the device differently from the CSR, on purpose.
	o, err := p.SignCSR(makeCSR(t, pkix.Name{CommonName: "laptop-42"}), IssueOptions{Name: "carol-laptop", OverrideCN: true})
	if err != nil || o.Cert.Subject.CommonName != "carol-laptop" {
		t.Errorf("override CN: %v", err)
	}
}

func TestCSRCNNotAString(t *testing.T) {
	csr := &x509.CertificateRequest{Subject: pkix.Name{Names: []pkix.AttributeTypeAndValue{{Type: oidCommonName, Value: 42}}}}
	if _, err := csrCN(csr); err == nil || !strings.Contains(err.Error(), "not a string") {
		t.Errorf("integer CN: %v", err)
	}
	csr.Subject.Names = []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{2, 5, 4, 10}, Value: "o"}, {Type: oidCommonName, Value: "a"}}
	if cn, err := csrCN(csr); err != nil || cn != "a" {
		t.Errorf("one CN among other attributes: %q %v", cn, err)
	}
}

func mustIssuer(t *testing.T, p *PKI) *x509.Certificate {
	t.Helper()
	c, err := p.IssuerCert()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestMakeCSR(t *testing.T) {
	dir := t.TempDir()
	csrPath, keyPath, err := MakeCSR(dir, "dave-laptop", KeyEd25519)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key %s: %v %v", keyPath, fi.Mode(), err)
	}
	data, _ := os.ReadFile(csrPath)
	p := newTestPKI(t)
	is, err := p.SignCSR(data, IssueOptions{Name: "dave-laptop"})
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := os.ReadFile(keyPath)
	key, err := pki.ParseKey(kb)
	if err != nil || !publicKeyEqual(key.Public(), is.Cert.PublicKey) {
		t.Errorf("certificate is not for the CSR's key: %v", err)
	}
	if _, _, err := MakeCSR(dir, "dave-laptop", KeyEd25519); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Errorf("second MakeCSR: %v", err)
	}
	if kb2, _ := os.ReadFile(keyPath); !bytes.Equal(kb, kb2) {
		t.Error("the existing key was replaced")
	}
	if _, _, err := MakeCSR(dir, "-bad", KeyEd25519); err == nil {
		t.Error("bad name accepted")
	}
	if _, _, err := MakeCSR(dir, "eve", KeyType("dsa")); err == nil {
		t.Error("unknown key type accepted")
	}
}

// bundleFile is what `sallyport up` reads from a bundle.
type bundleFile struct {
	Server     string `toml:"server"`
	ServerName string `toml:"server_name"`
	TLS        struct {
		CA   string `toml:"ca_pem"`
		Cert string `toml:"cert_pem"`
		Key  string `toml:"key_pem"`
	} `toml:"tls"`
	Tunnel struct {
		Device string `toml:"device"`
	} `toml:"tunnel"`
}

func TestBundle(t *testing.T) {
	p := newTestPKI(t)
	a, err := p.IssueDevice(IssueOptions{Name: "alice", Key: KeyEd25519})
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(p.Path("ca.crt"))
	certPEM, _ := os.ReadFile(a.CertPath)
	keyPEM, _ := os.ReadFile(a.KeyPath)
	for _, tt := range []struct{ server, name, wantServer, wantName string }{
		{"vpn.example.com", "", "vpn.example.com:443", "vpn.example.com"},
		{"vpn.example.com:8443", "gw.internal", "vpn.example.com:8443", "gw.internal"},
		{"[2001:db8::1]:443", "", "[2001:db8::1]:443", "2001:db8::1"},
		{"[2001:db8::1]", "", "[2001:db8::1]:443", "2001:db8::1"},
	} {
		out, err := p.Bundle("alice", tt.server, tt.name)
		if err != nil {
			t.Fatalf("Bundle(%q): %v", tt.server, err)
		}
		var b bundleFile
		if _, err := toml.Decode(string(out), &b); err != nil {
			t.Fatalf("Bundle(%q) is not TOML: %v\n%s", tt.server, err, out)
		}
		if b.Server != tt.wantServer || b.ServerName != tt.wantName || b.Tunnel.Device != "" { // no device: the client picks a free spN
			t.Errorf("Bundle(%q, %q): server %q name %q device %q", tt.server, tt.name, b.Server, b.ServerName, b.Tunnel.Device)
		}
		if b.TLS.CA != string(caPEM) || b.TLS.Cert != string(certPEM) || b.TLS.Key != string(keyPEM) {
			t.Errorf("Bundle(%q): inline PEM differs from the PKI's files", tt.server)
		}
	}

	if _, err := p.SignCSR(makeCSR(t, pkix.Name{CommonName: "csr-dev"}), IssueOptions{Name: "csr-dev"}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.IssueDevice(IssueOptions{Name: "gone", Key: KeyEd25519}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Revoke("", "gone", "", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := p.IssueDevice(IssueOptions{Name: "swapped", Key: KeyEd25519}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.DeviceCertPath("swapped"), certPEM, 0o644); err != nil { // alice's certificate under swapped's name
		t.Fatal(err)
	}
	if _, err := p.IssueDevice(IssueOptions{Name: "nokey", Key: KeyEd25519}); err != nil {
		t.Fatal(err)
	}
	os.Remove(p.DeviceKeyPath("nokey"))
	for _, tt := range []struct{ device, server, want string }{
		{"../alice", "h:1", "invalid device name"},
		{"alice", "h:1:2", "want HOST:PORT"},
		{"alice", ":443", "has no host"},
		{"nobody", "h:1", `device "nobody" has no valid certificate`},
		{"gone", "h:1", `device "gone" has no valid certificate`},
		{"csr-dev", "h:1", "signed from a CSR"},
		{"swapped", "h:1", "does not hold the certificate with serial"},
		{"nokey", "h:1", "nokey.key"},
	} {
		if _, err := p.Bundle(tt.device, tt.server, ""); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Bundle(%q, %q): %v, want %q", tt.device, tt.server, err, tt.want)
		}
	}
	if _, err := New(t.TempDir()).Bundle("alice", "h:1", ""); !errors.Is(err, ErrNoCA) {
		t.Errorf("bundle without a CA: %v", err)
	}
}

// TestBundleQuoting: names that need TOML escapes survive the round trip.
func TestBundleQuoting(t *testing.T) {
	for _, s := range []string{`plain`, `a"b`, `back\slash`, "tab\tnew\nline\r"} {
		var v struct{ S string }
		if _, err := toml.Decode("S = "+tomlString(s), &v); err != nil || v.S != s {
			t.Errorf("tomlString(%q) decodes to %q, %v", s, v.S, err)
		}
	}
	for _, in := range []string{"A\r\nB", `x"""y\z`, "no newline"} {
		var v struct{ S string }
		doc := "S = \"\"\"\n" + pemText([]byte(in)) + "\"\"\"\n"
		want := strings.ReplaceAll(in, "\r", "")
		if !strings.HasSuffix(want, "\n") {
			want += "\n"
		}
		if _, err := toml.Decode(doc, &v); err != nil || v.S != want {
			t.Errorf("pemText(%q) decodes to %q, %v", in, v.S, err)
		}
	}
}

// TestRevokeSerialSpellings: a typed serial names exactly one certificate,
// and one that could be read two ways is refused rather than guessed.
func TestRevokeSerialSpellings(t *testing.T) {
	p := newTestPKI(t)
	iss := mustIssuer(t, p)
	now := time.Now().UTC()
	rec := func(serial, name string) *Record {
		return &Record{Serial: serial, Kind: KindDevice, Name: name, Issuer: iss.Subject.String(), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	}
	st, err := openStore(p.Dir, false, false)
	if err != nil {
		t.Fatal(err)
	}
	// "10" is hex 0x10; "a" is decimal 10; "1f" only hex.
	err = st.add(rec("10", "hex16"), rec("a", "dec10"), rec("1f", "hex31"))
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ in, want, err string }{
		{"10", "", "ambiguous"},
		{"0x10", "10", ""},
		{"d:10", "a", ""},
		{"1F", "1f", ""},
		{"1f", "1f", ""},
		{"d:31", "1f", ""},
		{"xyz", "", "unexpected character"},
		{"abc", "", "not in this PKI's index"},
	} {
		got, err := p.Revoke(tt.in, "", "superseded", 0)
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("revoke %q: %v, want %q", tt.in, err, tt.err)
			}
		case err != nil || len(got) != 1 || got[0].Record.Serial != tt.want:
			t.Errorf("revoke %q: %+v %v, want serial %s", tt.in, got, err, tt.want)
		}
	}
	for _, tt := range []struct{ serial, device, reason, want string }{
		{"10", "hex16", "", "exactly one"},
		{"", "", "", "exactly one"},
		{"0x10", "", "because", "because"},
	} {
		if _, err := p.Revoke(tt.serial, tt.device, tt.reason, 0); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Revoke(%q, %q, %q): %v, want %q", tt.serial, tt.device, tt.reason, err, tt.want)
		}
	}
}

// TestRevokeOtherIssuer: a record a CA foreign to this PKI issued cannot
// be "revoked" by a CRL that does not speak for it (a previous CA of this
// PKI, after a rotation, can: renewal.go).
func TestRevokeOtherIssuer(t *testing.T) {
	p := newTestPKI(t)
	st, err := openStore(p.Dir, false, false)
	if err != nil {
		t.Fatal(err)
	}
	err = st.add(&Record{Serial: "77", Kind: KindDevice, Name: "old", Issuer: "CN=Old CA", NotAfter: time.Now().Add(time.Hour)})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Revoke("0x77", "", "", 0); err == nil || !strings.Contains(err.Error(), "not by a CA of this PKI") {
		t.Errorf("revoke another CA's certificate: %v", err)
	}
	if _, err := p.Revoke("", "old", "", 0); err == nil || !strings.Contains(err.Error(), "not by a CA of this PKI") {
		t.Errorf("revoke another CA's device: %v", err)
	}
	recs, _ := p.List()
	for _, r := range recs {
		if r.Revoked() {
			t.Errorf("%s was marked revoked", r.Serial)
		}
	}
}

// TestCRLNumberNeverGoesBack: even with the index restored from an old
// backup, a new CRL's number is above the one on disk (gateways refuse a
// CRL whose number went down).
func TestCRLNumberNeverGoesBack(t *testing.T) {
	p := newTestPKI(t)
	var last int64
	for i := range 3 {
		crl, err := p.WriteCRL(i) // 0: the default lifetime
		if err != nil {
			t.Fatal(err)
		}
		if n := crl.Number.Int64(); n <= last {
			t.Fatalf("CRL number %d after %d", n, last)
		}
		last = crl.Number.Int64()
		if i == 2 && !crl.NextUpdate.After(time.Now().Add(36*time.Hour)) {
			t.Errorf("2-day CRL next update %v", crl.NextUpdate)
		}
	}
	st, err := openStore(p.Dir, false, false)
	if err != nil {
		t.Fatal(err)
	}
	err = st.setCRLNumber(1) // the index from a backup
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	crl, err := p.WriteCRL(0)
	if err != nil || crl.Number.Int64() != last+1 {
		t.Fatalf("CRL after restoring the index: %v %v, want number %d", crl.Number, err, last+1)
	}
	if _, err := p.LoadRevocations(); err != nil {
		t.Errorf("LoadRevocations: %v", err)
	}
	// A CRL signed by someone else is not this PKI's.
	other := newTestPKI(t)
	data, _ := os.ReadFile(other.Path("crl.pem"))
	if err := os.WriteFile(p.Path("crl.pem"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := p.LoadRevocations(); err == nil {
		t.Error("a foreign CRL loaded")
	}
}

// TestBrokenIssuer: the CA refuses to sign with a key that is not its
// certificate's, or that others can read, and says so.
func TestBrokenIssuer(t *testing.T) {
	p := newTestPKI(t)
	other := newTestPKI(t)
	k, _ := os.ReadFile(other.Path("intermediate.key"))
	if err := os.WriteFile(p.Path("intermediate.key"), k, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := p.IssueDevice(IssueOptions{Name: "a", Key: KeyEd25519}); err == nil || !strings.Contains(err.Error(), "does not match its certificate") {
		t.Errorf("mismatched CA key: %v", err)
	}
	if err := os.Chmod(p.Path("intermediate.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := p.WriteCRL(0); err == nil || !strings.Contains(err.Error(), "accessible by group or others") {
		t.Errorf("world-readable CA key: %v", err)
	}
	if err := os.WriteFile(p.Path("intermediate.key"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Revoke("", "a", "", 0); err == nil || !strings.Contains(err.Error(), "CA key") {
		t.Errorf("junk CA key: %v", err)
	}
	// Without an intermediate the root issues, and leaf files carry no chain.
	r := New(t.TempDir())
	if err := r.Init(InitOptions{Key: KeyECDSA}); err != nil {
		t.Fatal(err)
	}
	if cp, kp := r.IssuerPaths(); cp != r.Path("root.crt") || kp != r.Path("root.key") {
		t.Errorf("issuer paths %s %s", cp, kp)
	}
	d, err := r.IssueDevice(IssueOptions{Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if chain, _ := pki.LoadCertificates(d.CertPath); len(chain) != 1 {
		t.Errorf("root-issued leaf file has %d certificates", len(chain))
	}
	if _, inter, err := r.Roots(); err != nil || len(inter) != 0 {
		t.Errorf("Roots without intermediate: %d %v", len(inter), err)
	}
	empty := New(t.TempDir())
	for name, f := range map[string]func() error{
		"IssuerCert": func() error { _, err := empty.IssuerCert(); return err },
		"Roots":      func() error { _, _, err := empty.Roots(); return err },
		"List":       func() error { _, err := empty.List(); return err },
		"Issue":      func() error { _, err := empty.IssueDevice(IssueOptions{Name: "a"}); return err },
	} {
		if err := f(); !errors.Is(err, ErrNoCA) {
			t.Errorf("%s on an empty directory: %v", name, err)
		}
	}
}

// TestCorruptIndex: an index.db that is not ours, or from a newer release,
// or not a database at all, is refused with its path, by readers and by
// the CA alike, and left as it is for the admin to look at.
func TestCorruptIndex(t *testing.T) {
	for _, tt := range []struct {
		name string
		make func(t *testing.T, path string)
		want string
	}{
		{"not a database", func(t *testing.T, path string) {
			if err := os.WriteFile(path, bytes.Repeat([]byte("junk"), 4096), 0o600); err != nil {
				t.Fatal(err)
			}
		}, "open index"},
		{"another program's database", func(t *testing.T, path string) {
			rewrite(t, path, func(tx *bolt.Tx) error { return tx.DeleteBucket(bktMeta) })
		}, "not a sallyport index (no meta bucket)"},
		{"a newer index version", func(t *testing.T, path string) {
			rewrite(t, path, func(tx *bolt.Tx) error { return tx.Bucket(bktMeta).Put(keyVersion, []byte("2")) })
		}, `unsupported index version "2"`},
		{"a record that is not JSON", func(t *testing.T, path string) {
			rewrite(t, path, func(tx *bolt.Tx) error {
				k, _ := tx.Bucket(bktCerts).Cursor().Last() // device a's
				return tx.Bucket(bktCerts).Put(k, []byte("{torn"))
			})
		}, "index: record"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newTestPKI(t)
			if _, err := p.IssueDevice(IssueOptions{Name: "a", Key: KeyEd25519}); err != nil {
				t.Fatal(err)
			}
			tt.make(t, p.Path(indexDB))
			before, _ := os.ReadFile(p.Path(indexDB))
			for op, f := range map[string]func() error{
				"list":   func() error { _, err := p.List(); return err },
				"issue":  func() error { _, err := p.IssueDevice(IssueOptions{Name: "a", Key: KeyEd25519}); return err },
				"revoke": func() error { _, err := p.Revoke("", "a", "", 0); return err },
			} {
				err := f()
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("%s: %v, want %q", op, err, tt.want)
				}
			}
			if after, _ := os.ReadFile(p.Path(indexDB)); tt.name != "a record that is not JSON" && !bytes.Equal(before, after) {
				t.Error("a refused index was rewritten")
			}
		})
	}
}

// rewrite changes the index at path in one transaction, as another
// program or a newer release might have.
func rewrite(t *testing.T, path string, f func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(f); err != nil {
		t.Fatal(err)
	}
}
