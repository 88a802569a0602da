package ca

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// attestKeyFile holds the CA's key for activation secrets (32 random
// bytes, mode 0600, made on first use).
const attestKeyFile = "attest.key"

// ActivationSecret is the secret the CA wraps in a TPM credential for a
// device's attestation (pki/hwkey MakeChallenge) and expects back once the
// laptop's TPM has opened it. It is derived, not stored: an HMAC under the
// CA's attest.key of the device name, the CSR and the attestation, so the
// "sign --require-hardware" run that makes the challenge and the one that
// checks the answer need no state between them, and an answer fits only
// the CSR and attestation it was made for.
func (p *PKI) ActivationSecret(device string, csr, attestation []byte) ([]byte, error) {
	if !p.Initialized() {
		return nil, fmt.Errorf("%s: %w", p.Dir, ErrNoCA)
	}
	key, err := os.ReadFile(p.Path(attestKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(p.Path(attestKeyFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			_, err = f.Write(key)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("attestation key: %w", err)
		}
		if key, err = os.ReadFile(p.Path(attestKeyFile)); err != nil {
			return nil, fmt.Errorf("attestation key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("attestation key: %w", err)
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("attestation key %s: %d bytes, want 32", p.Path(attestKeyFile), len(key))
	}
	m := hmac.New(sha256.New, key)
	for _, part := range [][]byte{[]byte("sallyport activation"), []byte(device), csr, attestation} {
		h := sha256.Sum256(part)
		m.Write(h[:])
	}
	return m.Sum(nil), nil
}
