package hwkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/sallyport/sallyport/internal/userfile"
)

// The TPM path: every operation opens the TPM, recreates the storage root
// key from the owner seed (the same key after every reboot), loads the
// device key's wrapped blob under it, uses it and flushes both, then
// closes the TPM. Nothing stays loaded between handshakes, so another
// program (or a software TPM that serves one client at a time) can use
// the TPM meanwhile, and a TPM reset (suspend, reboot) costs nothing.

// ErrNoTPM means there is no TPM at the device path.
var ErrNoTPM = errors.New("no TPM found")

// tpmSigner is a device key inside the TPM.
type tpmSigner struct {
	mu     sync.Mutex
	device string
	file   string
	key    *tssKey
	pub    crypto.PublicKey
}

// OpenTPM opens the TPM key file at path for use with the TPM at device
// ("" means DefaultTPMDevice) and checks that this TPM can load it.
func OpenTPM(path, device string) (Signer, error) {
	if device == "" {
		device = DefaultTPMDevice
	}
	data, err := userfile.Read(path, maxKeyFile)
	if err != nil {
		return nil, fmt.Errorf("TPM key %s: %w", path, err)
	}
	k, err := parseTSSKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pub, err := tpm2.Pub(k.pub)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s := &tpmSigner{device: device, file: path, key: k, pub: pub}
	// Load it once now, so a key from another TPM (or a cleared one) is
	// found at start, not at the first handshake.
	if err := s.withKey(func(transport.TPM, tpm2.AuthHandle) error { return nil }); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *tpmSigner) Public() crypto.PublicKey { return s.pub }

func (s *tpmSigner) Where() string {
	return fmt.Sprintf("TPM %s (%s, key file %s)", s.device, describePublic(s.pub), s.file)
}

func (s *tpmSigner) Close() error { return nil }

// Sign signs digest inside the TPM: ECDSA for an ECC key, RSASSA-PKCS1-v1_5
// or RSA-PSS (opts *rsa.PSSOptions) for an RSA key.
func (s *tpmSigner) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	halg, err := tpmHash(opts.HashFunc())
	if err != nil {
		return nil, err
	}
	if len(digest) != opts.HashFunc().Size() {
		return nil, fmt.Errorf("TPM sign: digest of %d bytes for %v", len(digest), opts.HashFunc())
	}
	var scheme tpm2.TPMTSigScheme
	switch s.pub.(type) {
	case *ecdsa.PublicKey:
		scheme = tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: halg})}
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			// The TPM's PSS salt is as long as the hash (TPM 2.0 since
			// revision 1.38, libtpms, every current chip); that is what
			// TLS 1.3 asks for. A TPM that uses the longest salt instead
			// makes signatures the gateway refuses, so check here.
			if pss.SaltLength != rsa.PSSSaltLengthEqualsHash && pss.SaltLength != rsa.PSSSaltLengthAuto && pss.SaltLength != opts.HashFunc().Size() {
				return nil, fmt.Errorf("TPM sign: RSA-PSS salt length %d is not supported (only the hash length)", pss.SaltLength)
			}
			scheme = tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgRSAPSS, Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgRSAPSS, &tpm2.TPMSSchemeHash{HashAlg: halg})}
		} else {
			scheme = tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgRSASSA, Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSchemeHash{HashAlg: halg})}
		}
	default:
		return nil, fmt.Errorf("TPM sign: unsupported key %T", s.pub)
	}
	var sig []byte
	err = s.withKey(func(t transport.TPM, key tpm2.AuthHandle) error {
		rsp, err := tpm2.Sign{
			KeyHandle:  key,
			Digest:     tpm2.TPM2BDigest{Buffer: digest},
			InScheme:   scheme,
			Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
		}.Execute(t)
		if err != nil {
			return tpmError(s.device, "sign", err)
		}
		sig, err = encodeSignature(rsp.Signature)
		return err
	})
	if err != nil {
		return nil, err
	}
	if pss, ok := opts.(*rsa.PSSOptions); ok {
		// Never hand TLS a signature the other side will refuse without
		// saying why: verify with the salt length TLS 1.3 uses.
		vo := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: pss.Hash}
		if err := rsa.VerifyPSS(s.pub.(*rsa.PublicKey), opts.HashFunc(), digest, sig, vo); err != nil {
			return nil, fmt.Errorf("TPM %s made an RSA-PSS signature with a salt TLS 1.3 does not accept (%v); use an ECDSA key in this TPM", s.device, err)
		}
	}
	return sig, nil
}

func encodeSignature(sig tpm2.TPMTSignature) ([]byte, error) {
	switch sig.SigAlg {
	case tpm2.TPMAlgECDSA:
		e, err := sig.Signature.ECDSA()
		if err != nil {
			return nil, fmt.Errorf("TPM sign: %w", err)
		}
		return asn1.Marshal(struct{ R, S *big.Int }{
			new(big.Int).SetBytes(e.SignatureR.Buffer), new(big.Int).SetBytes(e.SignatureS.Buffer),
		})
	case tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS:
		var r *tpm2.TPMSSignatureRSA
		var err error
		if sig.SigAlg == tpm2.TPMAlgRSASSA {
			r, err = sig.Signature.RSASSA()
		} else {
			r, err = sig.Signature.RSAPSS()
		}
		if err != nil {
			return nil, fmt.Errorf("TPM sign: %w", err)
		}
		return r.Sig.Buffer, nil
	}
	return nil, fmt.Errorf("TPM sign: unexpected signature algorithm 0x%x", sig.SigAlg)
}

func tpmHash(h crypto.Hash) (tpm2.TPMIAlgHash, error) {
	switch h {
	case crypto.SHA256:
		return tpm2.TPMAlgSHA256, nil
	case crypto.SHA384:
		return tpm2.TPMAlgSHA384, nil
	case crypto.SHA512:
		return tpm2.TPMAlgSHA512, nil
	}
	return 0, fmt.Errorf("TPM sign: hash %v not supported (SHA-256, SHA-384, SHA-512)", h)
}

// withKey opens the TPM, loads the key under its parent and runs use with
// the key's handle; it flushes what it loaded and closes the TPM.
func (s *tpmSigner) withKey(use func(t transport.TPM, key tpm2.AuthHandle) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := openTPM(s.device)
	if err != nil {
		return err
	}
	defer t.Close()
	parent, flushParent, err := loadParent(t, s.device, s.key.parent, s.key.rsaParent)
	if err != nil {
		return err
	}
	defer flushParent()
	lr, err := tpm2.Load{ParentHandle: parent, InPrivate: s.key.private, InPublic: s.key.public}.Execute(t)
	if err != nil {
		if isIntegrity(err) {
			return fmt.Errorf("TPM %s cannot load the key in %s: it was made in another TPM, or this TPM was cleared since (enroll this device again: sallyport pki csr --tpm)", s.device, s.file)
		}
		return tpmError(s.device, "load the device key", err)
	}
	defer flush(t, lr.ObjectHandle)
	return use(t, tpm2.AuthHandle{Handle: lr.ObjectHandle, Name: lr.Name, Auth: tpm2.PasswordAuth(nil)})
}

// loadParent returns the key's parent: a persistent handle as it is, or
// the owner hierarchy's standard SRK, recreated (and flushed after use).
func loadParent(t transport.TPM, device string, handle uint32, rsaParent bool) (tpm2.AuthHandle, func(), error) {
	if handle != ownerHierarchy {
		rp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(handle)}.Execute(t)
		if err != nil {
			return tpm2.AuthHandle{}, nil, tpmError(device, fmt.Sprintf("read the parent key 0x%x", handle), err)
		}
		return tpm2.AuthHandle{Handle: tpm2.TPMHandle(handle), Name: rp.Name, Auth: tpm2.PasswordAuth(nil)}, func() {}, nil
	}
	tmpl := tpm2.ECCSRKTemplate
	if rsaParent {
		tmpl = tpm2.RSASRKTemplate
	}
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(t)
	if err != nil {
		return tpm2.AuthHandle{}, nil, tpmError(device, "create the storage root key", err)
	}
	return tpm2.AuthHandle{Handle: cp.ObjectHandle, Name: cp.Name, Auth: tpm2.PasswordAuth(nil)},
		func() { flush(t, cp.ObjectHandle) }, nil
}

func flush(t transport.TPM, h tpm2.TPMHandle) {
	_, _ = tpm2.FlushContext{FlushHandle: h}.Execute(t)
}

// deviceKeyTemplate is the template of a device key: made in this TPM
// (sensitiveDataOrigin), never duplicable to another (fixedTPM,
// fixedParent), signing only, no password and so no dictionary-attack
// counting (noDA, as tpm2-tss-engine does for keys without a password).
func deviceKeyTemplate(alg Algorithm) (tpm2.TPMTPublic, error) {
	attrs := tpm2.TPMAObject{
		FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
		UserWithAuth: true, NoDA: true, SignEncrypt: true,
	}
	switch alg {
	case ECDSAP256, "":
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgECC, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				CurveID: tpm2.TPMECCNistP256,
				Scheme:  tpm2.TPMTECCScheme{Scheme: tpm2.TPMAlgNull},
				KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{}),
		}, nil
	case RSA2048, RSA3072:
		return tpm2.TPMTPublic{
			Type: tpm2.TPMAlgRSA, NameAlg: tpm2.TPMAlgSHA256, ObjectAttributes: attrs,
			Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
				KeyBits: tpm2.TPMIRSAKeyBits(alg.rsaBits()),
				Scheme:  tpm2.TPMTRSAScheme{Scheme: tpm2.TPMAlgNull},
			}),
			Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
		}, nil
	}
	return tpm2.TPMTPublic{}, fmt.Errorf("key type %q cannot be made in the TPM", alg)
}

// GenerateTPM makes a new device key inside the TPM at device ("" means
// DefaultTPMDevice), under the owner hierarchy's standard storage root key,
// and returns the TPM key file to keep (useless in any other TPM) and a
// Signer over it. The private key is generated inside the TPM and can
// never be exported from it.
func GenerateTPM(device string, alg Algorithm, description string) (keyFile []byte, s Signer, err error) {
	if device == "" {
		device = DefaultTPMDevice
	}
	tmpl, err := deviceKeyTemplate(alg)
	if err != nil {
		return nil, nil, err
	}
	t, err := openTPM(device)
	if err != nil {
		return nil, nil, err
	}
	defer t.Close()
	parent, flushParent, err := loadParent(t, device, ownerHierarchy, false)
	if err != nil {
		return nil, nil, err
	}
	defer flushParent()
	cr, err := tpm2.Create{ParentHandle: parent, InPublic: tpm2.New2B(tmpl)}.Execute(t)
	if err != nil {
		if errors.Is(err, tpm2.TPMRCKeySize) || errors.Is(err, tpm2.TPMRCValue) || errors.Is(err, tpm2.TPMRCCurve) {
			return nil, nil, fmt.Errorf("TPM %s cannot make a %s key (try --key ecdsa): %w", device, alg, err)
		}
		return nil, nil, tpmError(device, "create the device key", err)
	}
	data, err := marshalTSSKey(cr.OutPublic, cr.OutPrivate, description)
	if err != nil {
		return nil, nil, err
	}
	k, err := parseTSSKey(data)
	if err != nil {
		return nil, nil, err
	}
	pub, err := tpm2.Pub(k.pub)
	if err != nil {
		return nil, nil, err
	}
	return data, &tpmSigner{device: device, file: "(new)", key: k, pub: pub}, nil
}

// SetFile records where the key file of a signer from GenerateTPM was
// written, for Where.
func SetFile(s Signer, path string) {
	if ts, ok := s.(*tpmSigner); ok {
		ts.file = path
	}
}

// tpmError turns a TPM response code into words: busy, lockout, hierarchy
// password, or the code with what the TPM was asked to do.
func tpmError(device, doing string, err error) error {
	switch {
	case errors.Is(err, tpm2.TPMRCLockout):
		return fmt.Errorf("TPM %s is in dictionary-attack lockout (too many wrong passwords were tried): it refuses to %s until the lockout time passes or an admin resets it (tpm2_dictionarylockout --clear-lockout): %w", device, doing, err)
	case errors.Is(err, tpm2.TPMRCRetry), errors.Is(err, tpm2.TPMRCYielded), errors.Is(err, tpm2.TPMRCTesting),
		errors.Is(err, tpm2.TPMRCObjectMemory), errors.Is(err, tpm2.TPMRCSessionMemory), errors.Is(err, tpm2.TPMRCMemory):
		return fmt.Errorf("TPM %s is busy (could not %s; try again in a moment): %w", device, doing, err)
	case errors.Is(err, tpm2.TPMRCBadAuth), errors.Is(err, tpm2.TPMRCAuthFail):
		return fmt.Errorf("TPM %s refused to %s: the owner hierarchy has a password, which sallyport does not use (keys go under the standard storage root key): %w", device, doing, err)
	case errors.Is(err, tpm2.TPMRCInitialize), errors.Is(err, tpm2.TPMRCReboot), errors.Is(err, tpm2.TPMRCFailure):
		return fmt.Errorf("TPM %s is not ready (could not %s: not started, or in failure mode): %w", device, doing, err)
	}
	return fmt.Errorf("TPM %s: could not %s: %w", device, doing, err)
}

func isIntegrity(err error) bool {
	return errors.Is(err, tpm2.TPMRCIntegrity) || errors.Is(err, tpm2.TPMRCSensitive)
}
