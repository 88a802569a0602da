//go:build !pkcs11 || !cgo

package hwkey

import "errors"

// errNoPKCS11 is what a binary built without PKCS#11 support says.
var errNoPKCS11 = errors.New("this sallyport binary was built without PKCS#11 support (it needs cgo): use the Debian package, or build with make build (go build -tags pkcs11)")

// PKCS11Supported reports whether this binary can use PKCS#11 tokens.
const PKCS11Supported = false

func openPKCS11(*PKCS11URI) (Signer, error) { return nil, errNoPKCS11 }

// GeneratePKCS11 makes a device key in a PKCS#11 token; this binary was
// built without PKCS#11 support, so it only says so.
func GeneratePKCS11(uri string, alg Algorithm) (Signer, error) {
	if _, err := ParsePKCS11URI(uri); err != nil {
		return nil, err
	}
	return nil, errNoPKCS11
}

// DeleteKey removes a token key; this binary has none to remove.
func DeleteKey(Signer) error { return nil }
