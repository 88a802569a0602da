package hwkey

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"

	"github.com/sallyport/sallyport/pki/hwkey/hwtest"
)

// withSoftKey is template with the public point of a new software key.
func withSoftKey(t *testing.T, template tpm2.TPMTPublic) (tpm2.TPMTPublic, *ecdsa.PrivateKey) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: k.X.FillBytes(make([]byte, 32))},
		Y: tpm2.TPM2BECCParameter{Buffer: k.Y.FillBytes(make([]byte, 32))},
	})
	return template, k
}

// TestAttestedKeyChecks: each property of the certified device key is
// checked on its own. A key without fixedTPM can be duplicated out of its
// TPM (or was loaded into it from software, which a TPM allows only with
// fixedTPM and fixedParent clear, and sensitiveDataOrigin as the loader
// says); a weak name algorithm lets two public areas share the name the
// certify binds. Mutation caught: dropping any one condition of
// tpmKeyPublic or strongNameAlg.
func TestAttestedKeyChecks(t *testing.T) {
	tmpl, err := deviceKeyTemplate(ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	base, soft := withSoftKey(t, tmpl)
	if _, err := tpmKeyPublic(tpm2.Marshal(tpm2.New2B(base)), soft.Public()); err != nil {
		t.Fatalf("a device key's public area as pki csr --tpm makes it: %v", err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := tpmKeyPublic(tpm2.Marshal(tpm2.New2B(base)), other.Public()); err == nil || !strings.Contains(err.Error(), "not the CSR's key") {
		t.Errorf("another key than the CSR's: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*tpm2.TPMTPublic)
		want string
	}{
		{"duplicable", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedTPM = false }, "fixedTPM"},
		{"parent may change", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedParent = false }, "fixedParent"},
		{"private key from outside", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SensitiveDataOrigin = false }, "sensitiveDataOrigin"},
		{"cannot sign", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SignEncrypt = false }, "sign"},
		{"also decrypts", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Decrypt = true }, "not decrypt"},
		{"restricted", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Restricted = true }, "not restricted"},
		{"SHA-1 name", func(p *tpm2.TPMTPublic) { p.NameAlg = tpm2.TPMAlgSHA1 }, "name algorithm"},
	} {
		p := base
		tc.edit(&p)
		if _, err := tpmKeyPublic(tpm2.Marshal(tpm2.New2B(p)), soft.Public()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
}

// TestAttestationKeyChecks: each property of the attestation key is
// checked on its own. An AK that is not restricted signs any digest; one
// that is not fixedTPM can be duplicated into software and sign a made-up
// certify with the right magic, while its original still answers the
// challenge next to the EK. Mutation caught: dropping any one condition of
// restrictedAK or its name-algorithm check.
func TestAttestationKeyChecks(t *testing.T) {
	base, _ := withSoftKey(t, akTemplate)
	if _, err := restrictedAK(tpm2.Marshal(tpm2.New2B(base))); err != nil {
		t.Fatalf("an AK as AttestTPM makes it: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*tpm2.TPMTPublic)
		want string
	}{
		{"unrestricted", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Restricted = false }, "restricted signing key"},
		{"not signing", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SignEncrypt = false }, "restricted signing key"},
		{"decrypting", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Decrypt = true }, "restricted signing key"},
		{"duplicable", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedTPM = false }, "fixed to its TPM"},
		{"parent may change", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedParent = false }, "fixed to its TPM"},
		{"private key from outside", func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SensitiveDataOrigin = false }, "fixed to its TPM"},
		{"SHA-1 name", func(p *tpm2.TPMTPublic) { p.NameAlg = tpm2.TPMAlgSHA1 }, "name algorithm"},
	} {
		p := base
		tc.edit(&p)
		if _, err := restrictedAK(tpm2.Marshal(tpm2.New2B(p))); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestCertifiedSoftwareKeyRefused: root on a laptop loads a key made in
// software into its TPM (TPM2_LoadExternal with the private key; the TPM
// accepts sensitiveDataOrigin as the loader says) and has the genuine AK
// certify it: a real certify, beginning with TPM_GENERATED, of a key
// that is a file. Enrollment and renewal refuse it for lacking fixedTPM.
func TestCertifiedSoftwareKeyRefused(t *testing.T) {
	tpm, ekCA := hwtest.StartSWTPMWithEK(t, t.TempDir())
	_, a, akFile := attested(t, tpm)
	tmpl, err := deviceKeyTemplate(ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	pub, soft := withSoftKey(t, tmpl)
	pub.ObjectAttributes.FixedTPM, pub.ObjectAttributes.FixedParent = false, false
	sens := tpm2.TPMTSensitive{SensitiveType: tpm2.TPMAlgECC,
		Sensitive: tpm2.NewTPMUSensitiveComposite(tpm2.TPMAlgECC, &tpm2.TPM2BECCParameter{Buffer: soft.D.FillBytes(make([]byte, 32))})}

	tp, err := openTPM(tpm.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	le, err := tpm2.LoadExternal{InPrivate: tpm2.New2B(sens), InPublic: tpm2.New2B(pub), Hierarchy: tpm2.TPMRHNull}.Execute(tp)
	if err != nil {
		t.Fatalf("LoadExternal of a software key (the premise): %v", err)
	}
	defer flush(tp, le.ObjectHandle)
	ak, flushAK := loadAK(t, tp, tpm.Socket, akFile)
	defer flushAK()
	cr, err := tpm2.Certify{
		ObjectHandle: tpm2.AuthHandle{Handle: le.ObjectHandle, Name: le.Name, Auth: tpm2.PasswordAuth(nil)},
		SignHandle:   ak,
		InScheme:     tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
	}.Execute(tp)
	if err != nil {
		t.Fatalf("the AK certifying the loaded software key (the premise): %v", err)
	}
	keyPub, info, sig := tpm2.Marshal(tpm2.New2B(pub)), cr.CertifyInfo.Bytes(), tpm2.Marshal(cr.Signature)

	forged := *a
	forged.KeyPublic, forged.CertifyInfo, forged.CertifySig = keyPub, info, sig
	if _, err := VerifyAttestation(&forged, soft.Public(), ekRoots(t, ekCA), nil); err == nil || !strings.Contains(err.Error(), "fixedTPM") {
		t.Errorf("enrollment of a software key the TPM certified: %v", err)
	}
	ra, _ := json.Marshal(RenewalAttestation{KeyPublic: keyPub, CertifyInfo: info, CertifySig: sig})
	if err := VerifyRenewalAttestation(a.AKPublic, ra, soft.Public()); err == nil || !strings.Contains(err.Error(), "fixedTPM") {
		t.Errorf("renewal to a software key the TPM certified: %v", err)
	}
}

// TestAttestationEKChecks: the EK certificate is judged by the
// manufacturer CAs the issuer gave and nothing else. Mutations caught: the
// RSA-only check (an ECC EK would reach MakeChallenge), keeping every
// unhandled critical extension out of the check instead of only the TCG
// subject alternative name, and letting nil roots fall back to the
// system's web roots.
func TestAttestationEKChecks(t *testing.T) {
	dir := t.TempDir()
	tpm, ekCA := hwtest.StartSWTPMWithEK(t, dir)
	s, a, _ := attested(t, tpm)
	roots := ekRoots(t, ekCA)

	// The same EK certificate re-issued by the manufacturer CA, once as it
	// is and once with a critical extension nobody here understands.
	ek, err := x509.ParseCertificate(a.EKCert)
	if err != nil {
		t.Fatal(err)
	}
	issuerPEM, err := os.ReadFile(filepath.Join(dir, "ekca", "issuercert.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ib, _ := pem.Decode(issuerPEM)
	issuer, err := x509.ParseCertificate(ib.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ekca", "signkey.pem"))
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := pem.Decode(keyPEM)
	signer, err := x509.ParsePKCS1PrivateKey(kb.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	reissue := func(pub any, extra ...asn1.ObjectIdentifier) []byte {
		tmpl := &x509.Certificate{SerialNumber: ek.SerialNumber, NotBefore: ek.NotBefore, NotAfter: ek.NotAfter,
			KeyUsage: ek.KeyUsage, BasicConstraintsValid: true}
		for _, e := range ek.Extensions {
			if e.Id.Equal(oidSubjectAltName) {
				tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, e)
			}
		}
		for _, o := range extra {
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkixExtension(o))
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, pub, signer)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	plain := *a
	plain.EKCert = reissue(ek.PublicKey)
	if _, err := VerifyAttestation(&plain, s.Public(), roots, nil); err != nil {
		t.Fatalf("the re-issued EK certificate (control): %v", err)
	}
	unknown := *a
	unknown.EKCert = reissue(ek.PublicKey, asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 99})
	if _, err := VerifyAttestation(&unknown, s.Public(), roots, nil); err == nil || !strings.Contains(err.Error(), "critical extension") {
		t.Errorf("an EK certificate with an unknown critical extension: %v", err)
	}

	// An ECC EK (TPMs have them too, at NV 0x01c0000a): only RSA EKs
	// are used, and a challenge is never made for another kind.
	eccKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecc := *a
	ecc.EKCert = reissue(eccKey.Public())
	if _, err := VerifyAttestation(&ecc, s.Public(), roots, nil); err == nil || !strings.Contains(err.Error(), "only RSA") {
		t.Errorf("an ECC EK certificate: %v", err)
	}
	eccCert, _ := x509.ParseCertificate(ecc.EKCert)
	if _, err := MakeChallenge(&Verified{EKCert: eccCert, AKName: []byte{0, 11, 1}}, "dev", make([]byte, 32)); err == nil {
		t.Error("a challenge for an ECC EK")
	}

	// No roots given: refused, even where the system's trust store would
	// vouch for the EK's CA (here it does: SSL_CERT_FILE).
	t.Setenv("SSL_CERT_FILE", ekCA)
	t.Setenv("SSL_CERT_DIR", t.TempDir())
	if _, err := VerifyAttestation(a, s.Public(), nil, nil); err == nil || !strings.Contains(err.Error(), "no TPM manufacturer CA given") {
		t.Errorf("no EK roots: %v", err)
	}
}

func pkixExtension(id asn1.ObjectIdentifier) pkix.Extension {
	return pkix.Extension{Id: id, Critical: true, Value: []byte{0x05, 0x00}}
}
