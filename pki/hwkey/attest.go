package hwkey

// TPM key attestation: evidence, checked by the issuer, that a device key
// was made inside a TPM whose endorsement key (EK) the TPM's manufacturer
// certified, without trusting the laptop's word.
//
//  1. On the laptop (AttestTPM): an attestation key (AK, a restricted
//     signing key: it signs only what the TPM itself produced) is made in
//     the TPM next to the device key, and TPM2_Certify has the AK sign the
//     device key's name. With it go the EK certificate from the TPM's NV.
//  2. The issuer (VerifyAttestation) checks the EK certificate against the
//     manufacturer CAs it trusts, that the device key's public area says
//     made in a TPM and never leaving it (fixedTPM, fixedParent,
//     sensitiveDataOrigin) and is the CSR's key, that the AK is a
//     restricted signing key bound to its TPM, and the AK's signature over
//     a certify structure naming the device key that the TPM itself made
//     (TPM_GENERATED: a restricted key signs other data too).
//  3. Nothing so far proves the AK lives in the EK's TPM: a laptop could
//     send a real EK certificate with a software "AK". So the issuer makes
//     a credential (MakeChallenge: TPM2_MakeCredential in software) that
//     only the TPM holding that EK can open, and only for an object with
//     the AK's name loaded in it; the laptop opens it (ActivateTPM,
//     TPM2_ActivateCredential) and returns the secret.
// Only then does the issuer record the key origin as attested.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// oidSubjectAltName is 2.5.29.17.
var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// EKCertIndexRSA is the NV index of the RSA 2048 EK certificate (TCG EK
// Credential Profile); every TPM 2.0 with an EK certificate has this one.
const EKCertIndexRSA = 0x01c00002

// Attestation is what "pki csr --tpm" sends with the CSR (JSON).
type Attestation struct {
	EKCert      []byte `json:"ek_cert"`      // DER, from the TPM's NV
	AKPublic    []byte `json:"ak_public"`    // TPM2B_PUBLIC of the attestation key
	KeyPublic   []byte `json:"key_public"`   // TPM2B_PUBLIC of the device key
	CertifyInfo []byte `json:"certify_info"` // TPMS_ATTEST the AK signed
	CertifySig  []byte `json:"certify_sig"`  // TPMT_SIGNATURE over it
}

// maxAttestation bounds an attestation file.
const maxAttestation = 64 << 10

// ParseAttestation decodes an attestation file.
func ParseAttestation(data []byte) (*Attestation, error) {
	if len(data) > maxAttestation {
		return nil, fmt.Errorf("attestation of %d bytes is too large", len(data))
	}
	var a Attestation
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return nil, fmt.Errorf("attestation: %w", err)
	}
	if len(a.EKCert) == 0 || len(a.AKPublic) == 0 || len(a.KeyPublic) == 0 || len(a.CertifyInfo) == 0 || len(a.CertifySig) == 0 {
		return nil, errors.New("attestation: a field is missing")
	}
	return &a, nil
}

// akTemplate is the attestation key: ECDSA P-256, restricted (it signs
// only structures the TPM made, so a certify cannot be forged with it),
// fixed to this TPM.
var akTemplate = tpm2.TPMTPublic{
	Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256,
	ObjectAttributes: tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, NoDA: true, Restricted: true, SignEncrypt: true,
	},
	Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
		CurveID: tpm2.TPMECCNistP256,
		Scheme: tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgECDSA,
			Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256})},
		KDF: tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
	}),
	Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
}

// AttestTPM makes an attestation key in the TPM at device and has it
// certify the device key in keyFile (a TPM key file). It returns the
// attestation for the issuer and the AK's own key file, which the laptop
// keeps to answer the issuer's challenge (ActivateTPM). A TPM without an
// EK certificate cannot attest: the error says so.
func AttestTPM(device string, keyFile []byte) (*Attestation, []byte, error) {
	if device == "" {
		device = DefaultTPMDevice
	}
	k, err := parseTSSKey(keyFile)
	if err != nil {
		return nil, nil, err
	}
	t, err := openTPM(device)
	if err != nil {
		return nil, nil, err
	}
	defer t.Close()
	ekCert, err := readNV(t, device, EKCertIndexRSA)
	if err != nil {
		return nil, nil, fmt.Errorf("TPM %s has no EK certificate to attest with (NV 0x%x): %w", device, EKCertIndexRSA, err)
	}
	parent, flushParent, err := loadParent(t, device, k.parent, k.rsaParent)
	if err != nil {
		return nil, nil, err
	}
	defer flushParent()
	ak, err := tpm2.Create{ParentHandle: parent, InPublic: tpm2.New2B(akTemplate)}.Execute(t)
	if err != nil {
		return nil, nil, tpmError(device, "create the attestation key", err)
	}
	akFile, err := marshalTSSKey(ak.OutPublic, ak.OutPrivate, "sallyport attestation key")
	if err != nil {
		return nil, nil, err
	}
	cr, err := certifyKey(t, device, parent, &tssKey{public: ak.OutPublic, private: ak.OutPrivate}, k)
	if err != nil {
		return nil, nil, err
	}
	return &Attestation{
		EKCert:      ekCert,
		AKPublic:    tpm2.Marshal(ak.OutPublic),
		KeyPublic:   tpm2.Marshal(k.public),
		CertifyInfo: cr.CertifyInfo.Bytes(),
		CertifySig:  tpm2.Marshal(cr.Signature),
	}, akFile, nil
}

// certifyKey loads ak and key under parent and has the attestation key
// certify the key (TPM2_Certify): a structure only the TPM makes, naming
// the key, signed by the restricted AK.
func certifyKey(t transport.TPM, device string, parent tpm2.AuthHandle, ak, key *tssKey) (*tpm2.CertifyResponse, error) {
	akl, err := tpm2.Load{ParentHandle: parent, InPrivate: ak.private, InPublic: ak.public}.Execute(t)
	if err != nil {
		return nil, tpmError(device, "load the attestation key", err)
	}
	defer flush(t, akl.ObjectHandle)
	kl, err := tpm2.Load{ParentHandle: parent, InPrivate: key.private, InPublic: key.public}.Execute(t)
	if err != nil {
		return nil, tpmError(device, "load the key to certify", err)
	}
	defer flush(t, kl.ObjectHandle)
	cr, err := tpm2.Certify{
		ObjectHandle: tpm2.AuthHandle{Handle: kl.ObjectHandle, Name: kl.Name, Auth: tpm2.PasswordAuth(nil)},
		SignHandle:   tpm2.AuthHandle{Handle: akl.ObjectHandle, Name: akl.Name, Auth: tpm2.PasswordAuth(nil)},
		InScheme:     tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
	}.Execute(t)
	if err != nil {
		return nil, tpmError(device, "certify the key", err)
	}
	return cr, nil
}

// readNV reads a whole NV index (the owner reads; EK certificates allow it).
func readNV(t transport.TPM, device string, index uint32) ([]byte, error) {
	rp, err := tpm2.NVReadPublic{NVIndex: tpm2.TPMHandle(index)}.Execute(t)
	if err != nil {
		return nil, tpmError(device, "read the NV index", err)
	}
	pub, err := rp.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	var out []byte
	for off := uint16(0); off < pub.DataSize; {
		n := min(pub.DataSize-off, 512)
		r, err := tpm2.NVRead{
			AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
			NVIndex:    tpm2.NamedHandle{Handle: tpm2.TPMHandle(index), Name: rp.NVName},
			Size:       n, Offset: off,
		}.Execute(t)
		if err != nil {
			return nil, tpmError(device, "read the EK certificate", err)
		}
		out = append(out, r.Data.Buffer...)
		off += n
	}
	// The NV area may be larger than the DER it holds.
	if c, err := x509.ParseCertificate(out); err == nil {
		return c.Raw, nil
	}
	der, err := trimDER(out)
	if err != nil {
		return nil, fmt.Errorf("EK certificate in NV 0x%x: %w", index, err)
	}
	return der, nil
}

// trimDER cuts a DER SEQUENCE from the front of b.
func trimDER(b []byte) ([]byte, error) {
	if len(b) < 4 || b[0] != 0x30 {
		return nil, errors.New("not DER")
	}
	l := int(b[1])
	hdr := 2
	if l&0x80 != 0 {
		n := l & 0x7f
		if n == 0 || n > 3 || len(b) < 2+n {
			return nil, errors.New("bad DER length")
		}
		l = 0
		for _, c := range b[2 : 2+n] {
			l = l<<8 | int(c)
		}
		hdr += n
	}
	if hdr+l > len(b) {
		return nil, errors.New("truncated DER")
	}
	if _, err := x509.ParseCertificate(b[:hdr+l]); err != nil {
		return nil, err
	}
	return b[:hdr+l], nil
}

// Verified is an attestation VerifyAttestation accepted: everything but
// the AK-EK binding, which the challenge settles.
type Verified struct {
	EKCert   *x509.Certificate
	AKName   []byte // TPM name of the attestation key (nameAlg || hash of its public area)
	AKPublic []byte // its TPM2B_PUBLIC
}

// VerifyAttestation checks an attestation against the CSR's public key and
// the EK certificate authorities the issuer trusts (roots, with any
// intermediates). See the file comment for what each step proves.
func VerifyAttestation(a *Attestation, csrKey crypto.PublicKey, roots, intermediates *x509.CertPool) (*Verified, error) {
	if roots == nil {
		// x509 would take the system's web roots: never the judges of
		// which TPMs exist.
		return nil, errors.New("attestation: no TPM manufacturer CA given to check the EK certificate against")
	}
	ek, err := x509.ParseCertificate(a.EKCert)
	if err != nil {
		return nil, fmt.Errorf("attestation: EK certificate: %w", err)
	}
	// EK certificates have an empty subject and a critical subject
	// alternative name holding only the TPM's manufacturer, model and
	// version as a directory name (TCG EK Credential Profile), which Go
	// leaves "unhandled"; it names the TPM, it restricts nothing.
	ek.UnhandledCriticalExtensions = slices.DeleteFunc(ek.UnhandledCriticalExtensions, func(o asn1.ObjectIdentifier) bool {
		return o.Equal(oidSubjectAltName)
	})
	if _, err := ek.Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("attestation: the EK certificate (%s) does not chain to a TPM manufacturer CA given with --ek-ca: %w", ek.Issuer, err)
	}
	if _, ok := ek.PublicKey.(*rsa.PublicKey); !ok {
		return nil, fmt.Errorf("attestation: EK key %T: only RSA EKs are supported", ek.PublicKey)
	}
	kp, err := tpmKeyPublic(a.KeyPublic, csrKey)
	if err != nil {
		return nil, err
	}
	keyName, err := tpm2.ObjectName(kp)
	if err != nil {
		return nil, err
	}
	akp, err := restrictedAK(a.AKPublic)
	if err != nil {
		return nil, err
	}
	if err := verifyCertify(akp, a.CertifyInfo, a.CertifySig, keyName.Buffer); err != nil {
		return nil, err
	}
	akName, err := tpm2.ObjectName(akp)
	if err != nil {
		return nil, err
	}
	return &Verified{EKCert: ek, AKName: akName.Buffer, AKPublic: a.AKPublic}, nil
}

// verifyCertify checks that the attestation key ak signed a TPM-made
// TPM2_Certify structure naming the object keyName.
func verifyCertify(ak *tpm2.TPMTPublic, info, sigBytes, keyName []byte) error {
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](info)
	if err != nil {
		return fmt.Errorf("attestation: certify structure (not made by a TPM?): %w", err)
	}
	// The magic is what makes a restricted key's signature mean "the TPM
	// made this": the TPM signs data beginning with TPM_GENERATED_VALUE
	// only when it made it itself, and signs anything else the owner
	// hashed (TPM2_Hash gives the ticket). go-tpm's Unmarshal does not
	// check it, so a laptop could have its genuine AK sign a made-up
	// "certify" of a software key under any other magic.
	if att.Magic != tpm2.TPMGeneratedValue {
		return fmt.Errorf("attestation: the certify structure does not begin with TPM_GENERATED (0x%08x): not made by the TPM, only signed by its attestation key", uint32(att.Magic))
	}
	if att.Type != tpm2.TPMSTAttestCertify {
		return fmt.Errorf("attestation: structure of type 0x%x, want a certify", att.Type)
	}
	ci, err := att.Attested.Certify()
	if err != nil {
		return fmt.Errorf("attestation: %w", err)
	}
	if !bytes.Equal(ci.Name.Buffer, keyName) {
		return errors.New("attestation: the certify names another key than the attested device key")
	}
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](sigBytes)
	if err != nil {
		return fmt.Errorf("attestation: signature: %w", err)
	}
	pub, err := tpm2.Pub(*ak)
	if err != nil {
		return fmt.Errorf("attestation: AK: %w", err)
	}
	digest := sha256.Sum256(info)
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		e, err := sig.Signature.ECDSA()
		if err != nil || sig.SigAlg != tpm2.TPMAlgECDSA || e.Hash != tpm2.TPMAlgSHA256 {
			return errors.New("attestation: the certify is not an ECDSA-SHA256 signature")
		}
		r, s := new(big.Int).SetBytes(e.SignatureR.Buffer), new(big.Int).SetBytes(e.SignatureS.Buffer)
		if !ecdsa.Verify(p, digest[:], r, s) {
			return errors.New("attestation: the attestation key's signature over the certify does not verify")
		}
		return nil
	}
	return fmt.Errorf("attestation: AK key %T not supported", pub)
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}

// Challenge is the issuer's credential for the laptop to activate.
type Challenge struct {
	Device         string `json:"device"`
	CredentialBlob []byte `json:"credential_blob"`
	EncSecret      []byte `json:"encrypted_secret"`
}

// MakeChallenge wraps secret so that only the TPM holding the EK of v's
// certificate, with the AK of v loaded, can recover it.
func MakeChallenge(v *Verified, device string, secret []byte) (*Challenge, error) {
	rsaPub, ok := v.EKCert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("challenge: EK key %T: only RSA EKs are supported", v.EKCert.PublicKey)
	}
	ek := tpm2.RSAEKTemplate
	ek.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: rsaPub.N.Bytes()})
	if rsaPub.E != 65537 {
		return nil, fmt.Errorf("EK exponent %d is not the template's", rsaPub.E)
	}
	key, err := tpm2.ImportEncapsulationKey(&ek)
	if err != nil {
		return nil, fmt.Errorf("challenge: %w", err)
	}
	blob, enc, err := tpm2.CreateCredential(rand.Reader, key, v.AKName, secret)
	if err != nil {
		return nil, fmt.Errorf("challenge: %w", err)
	}
	return &Challenge{Device: device, CredentialBlob: blob, EncSecret: enc}, nil
}

// ActivateTPM opens the issuer's challenge in the TPM at device with the
// attestation key in akFile: TPM2_ActivateCredential under the standard
// RSA EK (recreated from the endorsement seed). It returns the secret.
func ActivateTPM(device string, akFile []byte, ch *Challenge) ([]byte, error) {
	if device == "" {
		device = DefaultTPMDevice
	}
	ak, err := parseTSSAK(akFile)
	if err != nil {
		return nil, err
	}
	t, err := openTPM(device)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	parent, flushParent, err := loadParent(t, device, ak.parent, ak.rsaParent)
	if err != nil {
		return nil, err
	}
	defer flushParent()
	akl, err := tpm2.Load{ParentHandle: parent, InPrivate: ak.private, InPublic: ak.public}.Execute(t)
	if err != nil {
		if isIntegrity(err) {
			return nil, fmt.Errorf("TPM %s cannot load the attestation key: it was made in another TPM", device)
		}
		return nil, tpmError(device, "load the attestation key", err)
	}
	defer flush(t, akl.ObjectHandle)
	ek, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tpm2.RSAEKTemplate),
	}.Execute(t)
	if err != nil {
		return nil, tpmError(device, "create the endorsement key", err)
	}
	defer flush(t, ek.ObjectHandle)
	policy := tpm2.Policy(tpm2.TPMAlgSHA256, 16, func(tp transport.TPM, h tpm2.TPMISHPolicy, nonce tpm2.TPM2BNonce) error {
		_, err := tpm2.PolicySecret{
			AuthHandle:    tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
			PolicySession: h, NonceTPM: nonce,
		}.Execute(tp)
		return err
	})
	r, err := tpm2.ActivateCredential{
		ActivateHandle: tpm2.AuthHandle{Handle: akl.ObjectHandle, Name: akl.Name, Auth: tpm2.PasswordAuth(nil)},
		KeyHandle:      tpm2.AuthHandle{Handle: ek.ObjectHandle, Name: ek.Name, Auth: policy},
		CredentialBlob: tpm2.TPM2BIDObject{Buffer: ch.CredentialBlob},
		Secret:         tpm2.TPM2BEncryptedSecret{Buffer: ch.EncSecret},
	}.Execute(t)
	if err != nil {
		return nil, tpmError(device, "activate the issuer's challenge (was it made for this TPM's endorsement key?)", err)
	}
	return r.CertInfo.Buffer, nil
}

// parseTSSAK parses an attestation key's key file (a restricted signing
// key, which parseTSSKey refuses for device keys).
func parseTSSAK(data []byte) (*tssKey, error) {
	return parseTSSKeyAllowRestricted(data, true)
}
