package hwkey

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestParsePKCS11URI: the RFC 7512 attributes a device key needs, percent
// decoding, and the refusals (PIN in the URI, no module, no token, no key,
// unknown attributes).
func TestParsePKCS11URI(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		want string // "" = accepted
		chk  func(*PKCS11URI) bool
	}{
		{uri: "pkcs11:token=My%20Token;object=dev?module-path=/usr/lib/p11.so&pin-source=file:/etc/pin",
			chk: func(u *PKCS11URI) bool {
				return u.Token == "My Token" && u.Object == "dev" && u.ModulePath == "/usr/lib/p11.so" && u.PINSource == "file:/etc/pin"
			}},
		{uri: "pkcs11:serial=0123;id=%01%ff;type=private?module-path=/m.so",
			chk: func(u *PKCS11URI) bool {
				return u.Serial == "0123" && string(u.ID) == "\x01\xff" && u.Type == "private"
			}},
		{uri: "pkcs11:slot-id=3;object=a+b?module-path=/m.so",
			chk: func(u *PKCS11URI) bool { return *u.SlotID == 3 && u.Object == "a+b" }},
		{uri: "pkcs11:token=t;object=o;x-vendor=1?module-path=/m.so&x-foo=bar", chk: func(*PKCS11URI) bool { return true }},
		{uri: "pkcs11:token=t;object=o?module-path=/m.so&pin-value=1234", want: "pin-value"},
		{uri: "pkcs11:token=t;object=o", want: "module-path is required"},
		{uri: "pkcs11:token=t;object=o?module-path=rel.so", want: "absolute"},
		{uri: "pkcs11:token=t;object=o?module-path=/usr/lib/../../tmp/p11.so", want: "without . or .."},
		{uri: "pkcs11:token=t;object=o?module-path=/usr/lib//p11.so", want: "without . or .."},
		{uri: "pkcs11:token=t;object=o?module-path=/usr/lib/p11.so/", want: "without . or .."},
		{uri: "pkcs11:object=o?module-path=/m.so", want: "name the token"},
		{uri: "pkcs11:token=t?module-path=/m.so", want: "name the key"},
		{uri: "pkcs11:token=t;object=o;colour=red?module-path=/m.so", want: "unknown attribute"},
		{uri: "pkcs11:token=t;token=u;object=o?module-path=/m.so", want: "twice"},
		{uri: "pkcs11:token=t;object=o;type=cert?module-path=/m.so", want: "type=private"},
		{uri: "pkcs11:token=%zz;object=o?module-path=/m.so", want: "token"},
		{uri: "pkcs11:slot-id=x;object=o?module-path=/m.so", want: "slot-id"},
		{uri: "pkcs11:token=t;object=o?module-name=softhsm2", want: "module-name"},
		{uri: "file:/etc/key", want: "not a pkcs11: URI"},
	} {
		u, err := ParsePKCS11URI(tc.uri)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.uri, err)
		case tc.want == "" && !tc.chk(u):
			t.Errorf("%s: parsed as %+v", tc.uri, u)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err %v, want %q", tc.uri, err, tc.want)
		}
	}
}

// TestReadPIN: a PIN comes from a file only its owner can read, or from a
// systemd credential; never from a file others can read.
func TestReadPIN(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "pin")
	if err := os.WriteFile(good, []byte("1234\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte("1234\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	two := filepath.Join(dir, "two")
	if err := os.WriteFile(two, []byte("1234\n5678\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(dir, "creds")
	os.Mkdir(creds, 0o700)
	if err := os.WriteFile(filepath.Join(creds, "tokenpin"), []byte("9999"), 0o400); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	for _, tc := range []struct {
		src, pin, err string
	}{
		{src: "", pin: ""},
		{src: "file:" + good, pin: "1234"},
		{src: "file://" + good, pin: "1234"},
		{src: good, pin: "1234"},
		{src: "credential:tokenpin", pin: "9999"},
		{src: "credential:../pin", err: "not a credential name"},
		{src: open, err: "accessible by group or others"},
		{src: two, err: "more than one line"},
		{src: "env:PIN", err: "want file:/path"},
		{src: "file://localhost" + good, pin: "1234"},
		{src: "file:pin", err: "relative path"},
		{src: "file://" + strings.TrimPrefix(good, "/"), err: "names host"},
	} {
		pin, err := ReadPIN(tc.src)
		if tc.err == "" && (err != nil || pin != tc.pin) {
			t.Errorf("%q: %q, %v; want %q", tc.src, pin, err, tc.pin)
		}
		if tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%q: err %v, want %q", tc.src, err, tc.err)
		}
	}
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	if _, err := ReadPIN("credential:tokenpin"); err == nil || !strings.Contains(err.Error(), "LoadCredential") {
		t.Errorf("credential without systemd: %v", err)
	}
}
