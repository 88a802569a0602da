package hwkey

import (
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
)

// FuzzParseTSSKey: a TPM key file is read from disk (another user, a
// restore from backup): any bytes give a key or an error, never a panic.
func FuzzParseTSSKey(f *testing.F) {
	f.Add([]byte("-----BEGIN TSS2 PRIVATE KEY-----\nMAA=\n-----END TSS2 PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN TSS2 PRIVATE KEY-----\nMBMGBmeBBQoBA6ADAQH/AgRAAAABBAAEAA==\n-----END TSS2 PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := parseTSSKey(data)
		if err == nil && k == nil {
			t.Fatal("nil key without error")
		}
	})
}

// FuzzParsePKCS11URI: URIs come from configs and command lines.
func FuzzParsePKCS11URI(f *testing.F) {
	f.Add("pkcs11:token=a;object=b?module-path=/x.so&pin-source=file:/p")
	f.Add("pkcs11:slot-id=1;id=%01%02?module-path=/x.so")
	f.Add("pkcs11:token=a;object=b?module-path=/usr/lib/../x.so&pin-value=1")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParsePKCS11URI(s)
		if err != nil {
			return
		}
		switch {
		case u.Object == "" && len(u.ID) == 0:
			t.Fatalf("accepted %q without a key", s)
		case !filepath.IsAbs(u.ModulePath) || filepath.Clean(u.ModulePath) != u.ModulePath:
			t.Fatalf("accepted %q with module %q, not a clean absolute path", s, u.ModulePath)
		case u.Token == "" && u.Serial == "" && u.SlotID == nil:
			t.Fatalf("accepted %q without naming the token", s)
		}
		_, query, _ := strings.Cut(s, "?")
		for _, a := range strings.Split(query, "&") {
			if strings.HasPrefix(a, "pin-value=") {
				t.Fatalf("accepted %q with a PIN in it", s)
			}
		}
	})
}

// FuzzVerifyAttestation: an attestation comes from the laptop being
// enrolled; any bytes give an error, never a panic. No EK certificate
// passes an empty set of trusted CAs, so the TPM structures behind that
// check are reached through verifyCertify directly.
func FuzzVerifyAttestation(f *testing.F) {
	f.Add([]byte(`{"ek_cert":"AA==","ak_public":"AA==","key_public":"AA==","certify_info":"AA==","certify_sig":"AA=="}`), []byte{0, 1}, []byte{0xff, 0x54, 0x43, 0x47})
	f.Fuzz(func(t *testing.T, data, pub, info []byte) {
		if a, err := ParseAttestation(data); err == nil {
			_, _ = VerifyAttestation(a, nil, x509.NewCertPool(), nil)
		}
		if p, err := tpm2.Unmarshal[tpm2.TPM2BPublic](pub); err == nil {
			if c, err := p.Contents(); err == nil {
				_ = verifyCertify(c, info, info, nil)
			}
		}
	})
}
