package hwkey

import "testing"

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
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParsePKCS11URI(s)
		if err == nil && (u.ModulePath == "" || (u.Object == "" && len(u.ID) == 0)) {
			t.Fatalf("accepted %q without module or key", s)
		}
	})
}
