//go:build pkcs11 && cgo

package pkicmd

import (
	"crypto"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/pki/hwkey"
	"github.com/sallyport/sallyport/pki/hwkey/hwtest"
)

// TestCSRInToken: "pki csr --pkcs11 URI" makes the key inside the token
// (nothing but the CSR on disk) and "pki bundle --key-pkcs11" names it.
func TestCSRInToken(t *testing.T) {
	dir := newPKI(t)
	tokDir := t.TempDir()
	h := hwtest.NewSoftHSM(t, tokDir, "bob-card", "123456")
	t.Setenv("SOFTHSM2_CONF", h.Conf)
	uri := h.URI("sallyport", hwtest.WritePIN(t, filepath.Join(tokDir, "pin"), h.PIN))
	laptop := filepath.Join(t.TempDir(), "laptop")
	out := mustRun(t, "csr", "--dir", laptop, "--device", "bob", "--pkcs11", uri)
	if !strings.Contains(out, "key_pkcs11 = ") || !strings.Contains(out, "bob-card") {
		t.Errorf("csr output:\n%s", out)
	}
	entries, _ := os.ReadDir(filepath.Join(laptop, "devices"))
	if len(entries) != 1 || entries[0].Name() != "bob.csr" {
		t.Errorf("laptop files %v, want only bob.csr", entries)
	}
	noKeyOnDisk(t, laptop)
	s, err := hwkey.Open(hwkey.Ref{PKCS11: uri})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(csrKey(t, filepath.Join(laptop, "devices", "bob.csr"))) {
		t.Fatal("the CSR is not for the key in the token")
	}
	mustRun(t, "sign", "--dir", dir, "--csr", filepath.Join(laptop, "devices", "bob.csr"), "--device", "bob")
	prof := mustRun(t, "bundle", "--dir", dir, "--device", "bob", "--server", "vpn:443", "--key-pkcs11", uri)
	if !strings.Contains(prof, "key_pkcs11 = ") || strings.Contains(prof, "PRIVATE KEY") {
		t.Errorf("profile:\n%s", prof)
	}
}
