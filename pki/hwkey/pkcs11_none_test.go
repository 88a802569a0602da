//go:build !pkcs11 || !cgo

package hwkey

import (
	"strings"
	"testing"
)

// TestPKCS11NotBuilt: a binary without the pkcs11 tag says how to get one
// (and still checks the URI first).
func TestPKCS11NotBuilt(t *testing.T) {
	uri := "pkcs11:token=t;object=o?module-path=/m.so"
	for _, err := range []error{
		func() error { _, err := Open(Ref{PKCS11: uri}); return err }(),
		func() error { _, err := GeneratePKCS11(uri, ECDSAP256); return err }(),
	} {
		if err == nil || !strings.Contains(err.Error(), "built without PKCS#11 support") || !strings.Contains(err.Error(), "-tags pkcs11") {
			t.Errorf("err %v, want the build hint", err)
		}
	}
	if _, err := GeneratePKCS11("pkcs11:token=t", ECDSAP256); err == nil || strings.Contains(err.Error(), "built without") {
		t.Errorf("a bad URI: %v, want the URI's own error first", err)
	}
}
