package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// KeyType names a key algorithm: KeyECDSA (P-256, the default), KeyEd25519
// or KeyRSA3072.
type KeyType string

// Supported key types.
const (
	KeyECDSA   KeyType = "ecdsa"
	KeyEd25519 KeyType = "ed25519"
	KeyRSA3072 KeyType = "rsa3072"
)

// ParseKeyType accepts "ecdsa", "p256", "ecdsa-p256", "ed25519", "rsa3072",
// "rsa" ("" means ecdsa).
func ParseKeyType(s string) (KeyType, error) {
	switch s {
	case "", "ecdsa", "p256", "ecdsa-p256", "P-256", "p-256":
		return KeyECDSA, nil
	case "ed25519":
		return KeyEd25519, nil
	case "rsa3072", "rsa", "rsa-3072":
		return KeyRSA3072, nil
	}
	return "", fmt.Errorf("unknown key type %q (want ecdsa, ed25519 or rsa3072)", s)
}

// GenerateKey makes a new private key of type t.
func GenerateKey(t KeyType) (crypto.Signer, error) {
	switch t {
	case KeyECDSA, "":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case KeyRSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	return nil, fmt.Errorf("unknown key type %q", t)
}

// EncodeKey returns the PEM PKCS#8 "PRIVATE KEY" encoding of key.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
