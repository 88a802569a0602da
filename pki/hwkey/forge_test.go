package hwkey

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/sallyport/sallyport/pki/hwkey/hwtest"
)

func forgeCertify(t *testing.T, tpm *hwtest.SWTPM, akFile []byte, soft *ecdsa.PublicKey, magic tpm2.TPMGenerated) (keyPublic, info, sig []byte, err error) {
	t.Helper()
	fake := tpm2.TPMTPublic{
		Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true, NoDA: true, SignEncrypt: true},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			CurveID: tpm2.TPMECCNistP256, Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull}, KDF: tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull}}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: soft.X.FillBytes(make([]byte, 32))},
			Y: tpm2.TPM2BECCParameter{Buffer: soft.Y.FillBytes(make([]byte, 32))}}),
	}
	name, err := tpm2.ObjectName(&fake)
	if err != nil {
		t.Fatal(err)
	}
	att := tpm2.TPMSAttest{
		Magic: magic, Type: tpm2.TPMSTAttestCertify,
		Attested: tpm2.NewTPMUAttest(tpm2.TPMSTAttestCertify, &tpm2.TPMSCertifyInfo{Name: *name, QualifiedName: *name}),
	}
	info = tpm2.Marshal(att)
	tp, err := openTPM(tpm.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	ak, flushAK := loadAK(t, tp, tpm.Socket, akFile)
	defer flushAK()
	h, err := tpm2.Hash{Data: tpm2.TPM2BMaxBuffer{Buffer: info}, HashAlg: tpm2.TPMAlgSHA256, Hierarchy: tpm2.TPMRHOwner}.Execute(tp)
	if err != nil {
		t.Fatalf("TPM2_Hash: %v", err)
	}
	sr, err := tpm2.Sign{
		KeyHandle:  ak,
		Digest:     h.OutHash,
		InScheme:   tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
		Validation: h.Validation,
	}.Execute(tp)
	if err != nil {
		return nil, nil, nil, err
	}
	return tpm2.Marshal(tpm2.New2B(fake)), info, tpm2.Marshal(sr.Signature), nil
}

// loadAK loads the attestation key of akFile into the open TPM tp, as a
// thief with root on the laptop can; flush it before closing tp (swtpm has
// no resource manager to do it).
func loadAK(t *testing.T, tp transport.TPM, device string, akFile []byte) (ak tpm2.AuthHandle, flushAK func()) {
	t.Helper()
	k, err := parseTSSAK(akFile)
	if err != nil {
		t.Fatal(err)
	}
	parent, flushParent, err := loadParent(tp, device, k.parent, k.rsaParent)
	if err != nil {
		t.Fatal(err)
	}
	defer flushParent()
	akl, err := tpm2.Load{ParentHandle: parent, InPrivate: k.private, InPublic: k.public}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	return tpm2.AuthHandle{Handle: akl.ObjectHandle, Name: akl.Name, Auth: tpm2.PasswordAuth(nil)}, func() { flush(tp, akl.ObjectHandle) }
}

// TestForgedCertifyRefused: a laptop's genuine AK, in a TPM whose EK
// certificate the issuer trusts, signs a made-up certify of a software key
// (TPM2_Hash + TPM2_Sign). With TPM_GENERATED as its magic the TPM will
// not sign it; with any other magic it does, and the issuer must see that
// the TPM did not make it, at enrollment (before the challenge, which that
// TPM would open: the AK is real) and at renewal.
//
// Mutation caught: dropping the TPM_GENERATED check in verifyCertify makes
// both the enrollment and the renewal accept the software key.
func TestForgedCertifyRefused(t *testing.T) {
	tpm, ekCA := hwtest.StartSWTPMWithEK(t, t.TempDir())
	_, a, akFile := attested(t, tpm)
	soft, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := forgeCertify(t, tpm, akFile, &soft.PublicKey, tpm2.TPMGeneratedValue); err == nil {
		t.Fatal("the TPM's restricted AK signed a structure beginning with TPM_GENERATED that the TPM did not make")
	}
	keyPub, info, sig, err := forgeCertify(t, tpm, akFile, &soft.PublicKey, 0)
	if err != nil {
		t.Fatalf("the AK refused to sign the made-up structure (the premise of this test): %v", err)
	}
	forged := *a
	forged.KeyPublic, forged.CertifyInfo, forged.CertifySig = keyPub, info, sig
	if _, err := VerifyAttestation(&forged, soft.Public(), ekRoots(t, ekCA), nil); err == nil || !strings.Contains(err.Error(), "TPM_GENERATED") {
		t.Errorf("enrollment: a software key certified by a made-up structure: %v", err)
	}
	ra, err := json.Marshal(RenewalAttestation{KeyPublic: keyPub, CertifyInfo: info, CertifySig: sig})
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyRenewalAttestation(a.AKPublic, ra, soft.Public()); err == nil || !strings.Contains(err.Error(), "TPM_GENERATED") {
		t.Errorf("renewal: a software key certified by a made-up structure: %v", err)
	}
}
