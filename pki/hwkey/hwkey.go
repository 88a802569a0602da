package hwkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Kind says where a device key lives.
type Kind string

// Where a device key can live.
const (
	KindFile   Kind = "file"   // a PEM private key on disk
	KindTPM    Kind = "tpm"    // inside the TPM 2.0
	KindPKCS11 Kind = "pkcs11" // inside a PKCS#11 token
)

// Ref names a hardware key: exactly one of TPMKey (a TSS2 key file) or
// PKCS11 (a pkcs11: URI) is set.
type Ref struct {
	// TPMKey is the path of the TSS2 key file made by GenerateTPM.
	TPMKey string
	// TPMDevice is the TPM to use: a character device (default
	// /dev/tpmrm0, the kernel's resource manager) or the unix socket of a
	// software TPM (swtpm --server type=unixio), for tests.
	TPMDevice string
	// PKCS11 is an RFC 7512 URI naming the token, the key and the module.
	PKCS11 string
}

// DefaultTPMDevice is the kernel's TPM resource manager: several programs
// may use it at once, and it flushes what a crashed program left loaded.
const DefaultTPMDevice = "/dev/tpmrm0"

// Kind is where the key named by r lives.
func (r Ref) Kind() Kind {
	switch {
	case r.TPMKey != "":
		return KindTPM
	case r.PKCS11 != "":
		return KindPKCS11
	}
	return KindFile
}

// Signer is a device key held in hardware: a crypto.Signer for the TLS
// handshake, and Close to release the device or token.
type Signer interface {
	crypto.Signer
	io.Closer
	// Where says in words where the key lives, for status and logs, e.g.
	// "TPM /dev/tpmrm0 (key file /etc/sallyport/devices/x.tpmkey)" or
	// "PKCS#11 token \"alice\" (object \"device\")".
	Where() string
}

// Open opens the hardware key r names and checks that the hardware can use
// it (the TPM loads it, the token is present and the PIN accepted).
func Open(r Ref) (Signer, error) {
	switch r.Kind() {
	case KindTPM:
		return OpenTPM(r.TPMKey, r.TPMDevice)
	case KindPKCS11:
		u, err := ParsePKCS11URI(r.PKCS11)
		if err != nil {
			return nil, err
		}
		return openPKCS11(u)
	}
	return nil, errors.New("hwkey: no hardware key named (give a TPM key file or a pkcs11: URI)")
}

// Algorithm names a key algorithm for a hardware key.
type Algorithm string

// The algorithms hardware keys are made with.
const (
	ECDSAP256 Algorithm = "ecdsa"   // NIST P-256, the default
	RSA2048   Algorithm = "rsa2048" // RSA 2048, what every TPM 2.0 supports
	RSA3072   Algorithm = "rsa3072" // RSA 3072, where the hardware supports it
)

// ParseAlgorithm accepts "ecdsa" (or "p256", ""), "rsa" (or "rsa2048") and
// "rsa3072".
func ParseAlgorithm(s string) (Algorithm, error) {
	switch strings.ToLower(s) {
	case "", "ecdsa", "p256", "ecdsa-p256", "p-256":
		return ECDSAP256, nil
	case "rsa", "rsa2048", "rsa-2048":
		return RSA2048, nil
	case "rsa3072", "rsa-3072":
		return RSA3072, nil
	}
	return "", fmt.Errorf("key type %q cannot be made in hardware (want ecdsa, rsa2048 or rsa3072)", s)
}

func (a Algorithm) rsaBits() int {
	switch a {
	case RSA2048:
		return 2048
	case RSA3072:
		return 3072
	}
	return 0
}

// describePublic names a public key's algorithm in words.
func describePublic(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	}
	return fmt.Sprintf("%T", pub)
}
