package hwkey

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/hwkey/hwtest"
)

func ekRoots(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	cas, err := pki.LoadCertificates(path)
	if err != nil {
		t.Fatal(err)
	}
	return pki.NewPool(cas)
}

// attested makes a device key in tpm and its attestation.
func attested(t *testing.T, tpm *hwtest.SWTPM) (Signer, *Attestation, []byte) {
	t.Helper()
	keyFile, s, err := GenerateTPM(tpm.Socket, ECDSAP256, "dev")
	if err != nil {
		t.Fatal(err)
	}
	a, akFile, err := AttestTPM(tpm.Socket, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return s, a, akFile
}

// TestAttestationRoundTrip: a key made in a TPM with an EK certificate is
// attested, the issuer verifies the attestation against the manufacturer
// CA, and only that TPM, with that AK, opens the challenge.
func TestAttestationRoundTrip(t *testing.T) {
	tpm, ekCA := hwtest.StartSWTPMWithEK(t, t.TempDir())
	s, a, akFile := attested(t, tpm)
	v, err := VerifyAttestation(a, s.Public(), ekRoots(t, ekCA), nil)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("0123456789abcdef0123456789abcdef")
	ch, err := MakeChallenge(v, "dev", secret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ActivateTPM(tpm.Socket, akFile, ch)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatalf("activated %x, want %x", got, secret)
	}
	tpm.Reboot()
	if got, err := ActivateTPM(tpm.Socket, akFile, ch); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("after a reboot: %x, %v", got, err)
	}
}

// TestAttestationRefusals: what a laptop without a TPM-held key would try.
func TestAttestationRefusals(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	tpmA, caA := hwtest.StartSWTPMWithEK(t, dirA)
	tpmB, _ := hwtest.StartSWTPMWithEK(t, dirB)
	sA, aA, _ := attested(t, tpmA)
	sB, aB, akB := attested(t, tpmB)
	rootsA := ekRoots(t, caA)

	soft, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := VerifyAttestation(aA, soft.Public(), rootsA, nil); err == nil || !strings.Contains(err.Error(), "not the CSR's key") {
		t.Errorf("a software key's CSR with another key's attestation: %v", err)
	}
	if _, err := VerifyAttestation(aB, sB.Public(), rootsA, nil); err == nil || !strings.Contains(err.Error(), "manufacturer CA") {
		t.Errorf("an EK certificate from an untrusted manufacturer: %v", err)
	}
	tampered := *aA
	tampered.CertifyInfo = append([]byte{}, aA.CertifyInfo...)
	tampered.CertifyInfo[len(tampered.CertifyInfo)-1] ^= 1
	if _, err := VerifyAttestation(&tampered, sA.Public(), rootsA, nil); err == nil {
		t.Error("a tampered certify verified")
	}
	// An unrestricted key as "AK" could sign a made-up certify structure
	// (TPM2_Sign signs any digest): only a restricted AK counts.
	unrestricted := *aA
	unrestricted.AKPublic = aA.KeyPublic
	if _, err := VerifyAttestation(&unrestricted, sA.Public(), rootsA, nil); err == nil || !strings.Contains(err.Error(), "restricted signing key") {
		t.Errorf("an unrestricted attestation key: %v", err)
	}
	swapped := *aA
	swapped.KeyPublic = aB.KeyPublic
	if _, err := VerifyAttestation(&swapped, sB.Public(), rootsA, nil); err == nil || !strings.Contains(err.Error(), "another key") {
		t.Errorf("a certify of another key: %v", err)
	}

	// TPM B's key, AK and certify are genuine, but the EK certificate is
	// TPM A's (trusted): the checks so far pass; the challenge, made for
	// A's EK, cannot be opened by B, where the AK lives.
	mixed := *aB
	mixed.EKCert = aA.EKCert
	v, err := VerifyAttestation(&mixed, sB.Public(), rootsA, nil)
	if err != nil {
		t.Fatalf("mixed attestation: %v", err)
	}
	ch, err := MakeChallenge(v, "dev", []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := ActivateTPM(tpmB.Socket, akB, ch); err == nil {
		t.Fatalf("TPM B opened a challenge made for TPM A's EK: %x", got)
	}
	if _, err := ActivateTPM(tpmA.Socket, akB, ch); err == nil || !strings.Contains(err.Error(), "another TPM") {
		t.Fatalf("TPM A loading TPM B's AK: %v", err)
	}
}

// TestAttestWithoutEKCert: a TPM without an EK certificate says so.
func TestAttestWithoutEKCert(t *testing.T) {
	tpm := hwtest.StartSWTPM(t, t.TempDir())
	keyFile, _, err := GenerateTPM(tpm.Socket, ECDSAP256, "dev")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := AttestTPM(tpm.Socket, keyFile); err == nil || !strings.Contains(err.Error(), "no EK certificate") {
		t.Fatalf("attest without an EK certificate: %v", err)
	}
	_ = os.Remove(filepath.Join(t.TempDir(), "x"))
}
