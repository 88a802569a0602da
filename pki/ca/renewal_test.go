package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"

	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/renew"
)

// TestMakeIssuer: the online issuer is a path-length-0, clientAuth-only
// CA under the root, which the gateway's issuer loader accepts and which
// renews a device of the PKI into a chain that verifies against ca.crt.
func TestMakeIssuer(t *testing.T) {
	for _, inter := range []bool{false, true} {
		p := New(t.TempDir())
		if err := p.Init(InitOptions{Intermediate: inter}); err != nil {
			t.Fatal(err)
		}
		if p.HasRenewalIssuer() {
			t.Fatal("issuer before pki issuer")
		}
		is, replaced, err := p.MakeIssuer(IssuerOptions{Days: 30})
		if err != nil || replaced != "" {
			t.Fatalf("MakeIssuer: %v %q", err, replaced)
		}
		c := is.Cert
		if !c.IsCA || !c.MaxPathLenZero || len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || c.NotAfter.Sub(c.NotBefore) > 31*24*time.Hour {
			t.Fatalf("online issuer %+v", c)
		}
		if fi, _ := os.Stat(is.KeyPath); fi.Mode().Perm() != 0o600 {
			t.Errorf("issuer key mode %v", fi.Mode().Perm())
		}
		ri, err := renew.Load(is.CertPath, is.KeyPath)
		if err != nil {
			t.Fatalf("the gateway would not load it: %v", err)
		}
		dev, err := p.IssueDevice(IssueOptions{Name: "alice", Groups: []string{"eng"}})
		if err != nil {
			t.Fatal(err)
		}
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		bundle, _ := p.TrustBundle()
		chains, err := dev.Cert.Verify(x509.VerifyOptions{Roots: pki.NewPool(bundle), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			t.Fatal(err)
		}
		renewed, err := ri.Reissue(chains[0], k.Public(), time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := renewed.Verify(x509.VerifyOptions{Roots: pki.NewPool(bundle), Intermediates: pki.NewPool(ri.Chain()),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Fatalf("intermediate %v: a renewed certificate does not verify against ca.crt: %v", inter, err)
		}
		if _, replaced, err := p.MakeIssuer(IssuerOptions{}); err != nil || replaced != pki.FormatSerial(c.SerialNumber) {
			t.Fatalf("second MakeIssuer: %v, replaced %q", err, replaced)
		}
		if !p.HasRenewalIssuer() {
			t.Fatal("no issuer after pki issuer")
		}
	}
}

// TestMakeIssuerOldRoot: a root of an older release (path length 0, no
// intermediate) cannot certify an issuer; the error says what to do.
func TestMakeIssuerOldRoot(t *testing.T) {
	p := New(t.TempDir())
	if err := p.Init(InitOptions{}); err != nil {
		t.Fatal(err)
	}
	// Re-make the root with path length 0, as releases before renewal did.
	root, _ := p.loadRoot()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(5), Subject: root.cert.Subject, NotBefore: root.cert.NotBefore, NotAfter: root.cert.NotAfter,
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: root.cert.KeyUsage}
	old, err := createCert(tmpl, tmpl, root.key.Public(), root.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p.Path("root.crt"), encodeCert(old), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.MakeIssuer(IssuerOptions{}); err == nil || !strings.Contains(err.Error(), "pki rotate") {
		t.Fatalf("issuer under a path-length-0 root: %v", err)
	}
	// Without the root key (kept offline) it says to bring it back.
	if err := os.Rename(p.Path("root.key"), p.Path("root.key.offline")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.MakeIssuer(IssuerOptions{}); err == nil || !strings.Contains(err.Error(), "offline storage") {
		t.Fatalf("issuer without the root key: %v", err)
	}
}

// TestRotate: the next CA signs from then on; ca.crt holds both and the
// cross-certificate; a device of the old CA can still be revoked (both
// CAs sign CRLs listing it); finishing takes the old CA out of ca.crt and
// the CRL.
func TestRotate(t *testing.T) {
	p := New(t.TempDir())
	if err := p.Init(InitOptions{Name: "Acme CA"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.MakeIssuer(IssuerOptions{}); err != nil {
		t.Fatal(err)
	}
	oldDev, err := p.IssueDevice(IssueOptions{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.Rotate(RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.New.Subject.CommonName != "Acme CA G2" || r.Issuer == nil || r.Issuer.CheckSignatureFrom(r.New) != nil {
		t.Fatalf("rotation %+v", r)
	}
	if err := r.Cross.CheckSignatureFrom(r.Old); err != nil || !pki.SamePublicKey(r.Cross.PublicKey, r.New.PublicKey) || r.Cross.Subject.String() != r.New.Subject.String() {
		t.Fatalf("cross-certificate: %v", err)
	}
	bundle, _ := p.TrustBundle()
	if len(bundle) != 3 || !bundle[0].Equal(r.New) || !bundle[1].Equal(r.Old) || !bundle[2].Equal(r.Cross) {
		t.Fatalf("ca.crt during the rotation: %d certificates", len(bundle))
	}
	if _, err := p.Rotate(RotateOptions{}); err == nil || !strings.Contains(err.Error(), "--finish") {
		t.Fatalf("second rotation while one runs: %v", err)
	}
	newDev, err := p.IssueDevice(IssueOptions{Name: "bob"})
	if err != nil || newDev.Cert.CheckSignatureFrom(r.New) != nil {
		t.Fatalf("after the rotation the next CA issues: %v", err)
	}
	// The old enrollment is revoked: both CAs' CRLs list it.
	if _, err := p.Revoke("", "alice", "", 0); err != nil {
		t.Fatalf("revoke a device of the previous CA: %v", err)
	}
	rl, err := pki.LoadCRL(p.Path("crl.pem"), bundle)
	if err != nil {
		t.Fatal(err)
	}
	if len(rl.CRLs()) != 2 {
		t.Fatalf("%d CRLs during the rotation, want the new and the old CA's", len(rl.CRLs()))
	}
	if ok, _ := rl.Revoked(oldDev.Cert); !ok {
		t.Error("the old CA's CRL does not revoke its device")
	}
	if ok, _ := rl.RevokedSerial(oldDev.Cert.SerialNumber); !ok {
		t.Error("the lineage check would not see the revocation")
	}
	old, err := p.FinishRotation()
	if err != nil || !old.Equal(r.Old) {
		t.Fatalf("finish: %v", err)
	}
	bundle, _ = p.TrustBundle()
	if len(bundle) != 1 || !bundle[0].Equal(r.New) {
		t.Fatalf("ca.crt after the rotation: %d certificates", len(bundle))
	}
	rl, err = pki.LoadCRL(p.Path("crl.pem"), bundle)
	if err != nil || len(rl.CRLs()) != 1 {
		t.Fatalf("CRL after the rotation: %v", err)
	}
	if ok, _ := rl.RevokedSerial(oldDev.Cert.SerialNumber); !ok {
		t.Error("after the rotation the next CA's CRL no longer lists the revoked enrollment")
	}
	if _, err := p.FinishRotation(); err == nil {
		t.Error("finish without a rotation")
	}
	// The next rotation works, and names the CA G3.
	r2, err := p.Rotate(RotateOptions{})
	if err != nil || r2.New.Subject.CommonName != "Acme CA G3" || filepath.Base(r2.Generation) != "2" {
		t.Fatalf("second rotation: %v %+v", err, r2)
	}
}

// TestCRLListsEveryRevocation: every CRL the PKI signs lists every revoked
// serial, so a renewed device whose lineage is revoked is refused whatever
// CA signed the CRL the gateway holds.
func TestCRLListsEveryRevocation(t *testing.T) {
	p := newTestPKI(t) // with an intermediate: the root signs a CRL too
	dev, err := p.IssueDevice(IssueOptions{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Revoke("", "alice", "keyCompromise", 0); err != nil {
		t.Fatal(err)
	}
	roots, inter, _ := p.Roots()
	rl, err := pki.LoadCRL(p.Path("crl.pem"), append(roots, inter...))
	if err != nil {
		t.Fatal(err)
	}
	if len(rl.CRLs()) != 2 {
		t.Fatalf("%d CRLs, want the intermediate's and the root's", len(rl.CRLs()))
	}
	for _, c := range rl.CRLs() {
		found := false
		for _, e := range c.RevokedCertificateEntries {
			found = found || e.SerialNumber.Cmp(dev.Cert.SerialNumber) == 0
		}
		if !found {
			t.Errorf("the CRL of %s does not list the revoked device", c.Issuer)
		}
	}

}
