package hwkey

import (
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-tpm/tpm2"
)

// Renewal of a device whose TPM origin was attested: the laptop has the
// TPM certify its new key with the attestation key the issuer verified at
// enrollment (its public area is in the certificate, pki.OIDAttestationKey).
// The AK is restricted, so such a certify cannot be made for a key outside
// that TPM; the gateway's issuer checks it against the AK from the verified
// certificate and may then carry the attested origin to the new one.

// RenewalAttestation is the evidence sent with a renewal request
// (tunnel.RenewRequest.Attestation, JSON).
type RenewalAttestation struct {
	KeyPublic   []byte `json:"key_public"`   // TPM2B_PUBLIC of the new key
	CertifyInfo []byte `json:"certify_info"` // TPMS_ATTEST the AK signed
	CertifySig  []byte `json:"certify_sig"`  // TPMT_SIGNATURE over it
}

// CertifyWithAK has the attestation key in akFile certify the TPM key in
// keyFile (both TPM key files of the TPM at device).
func CertifyWithAK(device string, akFile, keyFile []byte) (*RenewalAttestation, error) {
	if device == "" {
		device = DefaultTPMDevice
	}
	ak, err := parseTSSAK(akFile)
	if err != nil {
		return nil, fmt.Errorf("attestation key: %w", err)
	}
	k, err := parseTSSKey(keyFile)
	if err != nil {
		return nil, err
	}
	t, err := openTPM(device)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	parent, flushParent, err := loadParent(t, device, k.parent, k.rsaParent)
	if err != nil {
		return nil, err
	}
	defer flushParent()
	cr, err := certifyKey(t, device, parent, ak, k)
	if err != nil {
		return nil, err
	}
	return &RenewalAttestation{KeyPublic: tpm2.Marshal(k.public), CertifyInfo: cr.CertifyInfo.Bytes(), CertifySig: tpm2.Marshal(cr.Signature)}, nil
}

// VerifyRenewalAttestation checks a renewal attestation (JSON) for newKey
// against akPublic, the attestation key of the verified certificate being
// renewed: the new key is newKey, fixed to its TPM and made in it, and
// the AK certified it.
func VerifyRenewalAttestation(akPublic, attestation []byte, newKey crypto.PublicKey) error {
	if len(attestation) == 0 || len(attestation) > maxAttestation {
		return errors.New("renewal attestation missing or too large")
	}
	var a RenewalAttestation
	if err := json.Unmarshal(attestation, &a); err != nil {
		return fmt.Errorf("renewal attestation: %w", err)
	}
	akp, err := restrictedAK(akPublic)
	if err != nil {
		return err
	}
	kp, err := tpmKeyPublic(a.KeyPublic, newKey)
	if err != nil {
		return err
	}
	name, err := tpm2.ObjectName(kp)
	if err != nil {
		return err
	}
	return verifyCertify(akp, a.CertifyInfo, a.CertifySig, name.Buffer)
}

// restrictedAK parses an attestation key's TPM2B_PUBLIC and checks it is a
// restricted signing key fixed to its TPM.
func restrictedAK(b []byte) (*tpm2.TPMTPublic, error) {
	p2b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](b)
	if err != nil {
		return nil, fmt.Errorf("attestation: AK public area: %w", err)
	}
	akp, err := p2b.Contents()
	if err != nil {
		return nil, fmt.Errorf("attestation: AK public area: %w", err)
	}
	aa := akp.ObjectAttributes
	if !aa.Restricted || !aa.SignEncrypt || aa.Decrypt || !aa.FixedTPM || !aa.FixedParent || !aa.SensitiveDataOrigin {
		return nil, errors.New("attestation: the attestation key is not a restricted signing key fixed to its TPM")
	}
	if err := strongNameAlg("attestation key", akp.NameAlg); err != nil {
		return nil, err
	}
	return akp, nil
}

// strongNameAlg refuses a name algorithm weaker than SHA-256. An object's
// name (the hash of its public area, attributes included) is all that the
// certify and the credential activation bind; with SHA-1 two public areas
// of the attacker's making (one restricted or fixedTPM, one loadable from
// software) could share a name.
func strongNameAlg(what string, alg tpm2.TPMIAlgHash) error {
	switch alg {
	case tpm2.TPMAlgSHA256, tpm2.TPMAlgSHA384, tpm2.TPMAlgSHA512:
		return nil
	}
	return fmt.Errorf("attestation: the %s's name algorithm 0x%x is not SHA-256 or stronger", what, uint16(alg))
}

// tpmKeyPublic parses a device key's TPM2B_PUBLIC and checks it was made
// in its TPM, never leaves it, and is want.
func tpmKeyPublic(b []byte, want crypto.PublicKey) (*tpm2.TPMTPublic, error) {
	p2b, err := tpm2.Unmarshal[tpm2.TPM2BPublic](b)
	if err != nil {
		return nil, fmt.Errorf("attestation: device key public area: %w", err)
	}
	kp, err := p2b.Contents()
	if err != nil {
		return nil, fmt.Errorf("attestation: device key public area: %w", err)
	}
	// fixedTPM is what keeps a key in its TPM: a TPM loads a key made in
	// software (TPM2_LoadExternal, TPM2_Import) only with fixedTPM and
	// fixedParent clear, and takes the loader's word for
	// sensitiveDataOrigin. A device key signs and does nothing else, as
	// the ones pki csr --tpm makes (parseTSSKey refuses restricted keys).
	ka := kp.ObjectAttributes
	var missing []string
	for _, c := range []struct {
		ok   bool
		what string
	}{
		{ka.FixedTPM, "fixedTPM"}, {ka.FixedParent, "fixedParent"}, {ka.SensitiveDataOrigin, "sensitiveDataOrigin"},
		{ka.SignEncrypt, "sign"}, {!ka.Decrypt, "not decrypt"}, {!ka.Restricted, "not restricted"},
	} {
		if !c.ok {
			missing = append(missing, c.what)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("attestation: the device key may leave its TPM, was not made in it, or is not a signing-only key (lacks %s)", strings.Join(missing, ", "))
	}
	if err := strongNameAlg("device key", kp.NameAlg); err != nil {
		return nil, err
	}
	dk, err := tpm2.Pub(*kp)
	if err != nil {
		return nil, fmt.Errorf("attestation: device key: %w", err)
	}
	if !publicKeysEqual(dk, want) {
		return nil, errors.New("attestation: the attested TPM key is not the CSR's key")
	}
	return kp, nil
}
