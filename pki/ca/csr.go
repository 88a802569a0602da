package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/sallyport/sallyport/internal/atomicfile"
)

// MakeCSR creates a device key (never leaving this machine) and a CSR for it
// in dir: dir/devices/NAME.key (0600) and dir/devices/NAME.csr. It refuses to
// overwrite an existing key.
func MakeCSR(dir, name string, kt KeyType) (csrPath, keyPath string, err error) {
	if err := ValidName("device", name); err != nil {
		return "", "", err
	}
	sub := filepath.Join(dir, "devices")
	if err := os.MkdirAll(sub, 0o700); err != nil {
		return "", "", fmt.Errorf("csr: %w", err)
	}
	keyPath = filepath.Join(sub, name+".key")
	csrPath = filepath.Join(sub, name+".csr")
	if _, err := os.Stat(keyPath); err == nil {
		return "", "", fmt.Errorf("csr: key %s already exists; refusing to overwrite it", keyPath)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", "", fmt.Errorf("csr: %w", err)
	}
	key, err := GenerateKey(kt)
	if err != nil {
		return "", "", fmt.Errorf("csr: generate key: %w", err)
	}
	csr, err := EncodeCSR(name, key)
	if err != nil {
		return "", "", err
	}
	if err := writeKey(keyPath, key); err != nil {
		return "", "", err
	}
	if err := atomicfile.Write(csrPath, csr, 0o644); err != nil {
		return "", "", err
	}
	return csrPath, keyPath, nil
}

// EncodeCSR returns a PEM CSR for device name (the CN, and nothing else:
// the signer decides the rest) signed by key, which may live in hardware.
func EncodeCSR(name string, key crypto.Signer) ([]byte, error) {
	if err := ValidName("device", name); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}
