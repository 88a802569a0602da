//go:build pkcs11 && cgo

package hwkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/sallyport/sallyport/pki/hwkey/hwtest"
)

func newToken(t *testing.T) (*hwtest.SoftHSM, string) {
	t.Helper()
	dir := t.TempDir()
	h := hwtest.NewSoftHSM(t, dir, "sallyport-test", "4711")
	t.Setenv("SOFTHSM2_CONF", h.Conf)
	return h, hwtest.WritePIN(t, filepath.Join(dir, "pin"), h.PIN)
}

// TestPKCS11KeySignsTLS: a key generated in the token (ECDSA and RSA)
// signs a TLS 1.3 handshake the server verifies, and opens again from its
// URI after the first context is closed (the laptop restarted).
func TestPKCS11KeySignsTLS(t *testing.T) {
	h, pin := newToken(t)
	for _, alg := range []Algorithm{ECDSAP256, RSA2048} {
		t.Run(string(alg), func(t *testing.T) {
			uri := h.URI("dev-"+string(alg), pin)
			s, err := GeneratePKCS11(uri, alg)
			if err != nil {
				t.Fatal(err)
			}
			handshake(t, s)
			pub := s.Public()
			s.Close()
			s2, err := Open(Ref{PKCS11: uri})
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			defer s2.Close()
			if !publicEqual(s2.Public(), pub) {
				t.Fatal("reopened a different key")
			}
			handshake(t, s2)
			if w := s2.Where(); !strings.Contains(w, "PKCS#11") || !strings.Contains(w, "sallyport-test") {
				t.Errorf("Where() = %q", w)
			}
		})
	}
}

// TestPKCS11KeyCannotBeExported: the token refuses to hand out the private
// value of a key GeneratePKCS11 made (sensitive, never extractable), and
// says it was never extractable.
func TestPKCS11KeyCannotBeExported(t *testing.T) {
	h, pin := newToken(t)
	uri := h.URI("dev", pin)
	s, err := GeneratePKCS11(uri, ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ps := s.(*pkcs11Signer)
	_, err = ps.ctx.GetAttribute(ps.key, pkcs11.CKA_VALUE)
	var pe pkcs11.Error
	if !errors.As(err, &pe) || pe != pkcs11.CKR_ATTRIBUTE_SENSITIVE {
		t.Fatalf("reading the private value: %v, want CKR_ATTRIBUTE_SENSITIVE", err)
	}
	attrs, err := ps.ctx.GetAttributes(ps.key, []crypto11.AttributeType{pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_SENSITIVE, pkcs11.CKA_NEVER_EXTRACTABLE, pkcs11.CKA_LOCAL})
	if err != nil {
		t.Fatal(err)
	}
	if attrTrue(attrs, pkcs11.CKA_EXTRACTABLE) || !attrTrue(attrs, pkcs11.CKA_SENSITIVE) || !attrTrue(attrs, pkcs11.CKA_NEVER_EXTRACTABLE) || !attrTrue(attrs, pkcs11.CKA_LOCAL) {
		t.Fatalf("key attributes %v: want not extractable, sensitive, never extractable, made on the token", attrs)
	}
	d := sha256.Sum256([]byte("x"))
	sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), d[:], sig) {
		t.Fatalf("sign: %v", err)
	}
}

// TestPKCS11Errors: the sentences a laptop user sees.
func TestPKCS11Errors(t *testing.T) {
	h, pin := newToken(t)
	uri := h.URI("dev", pin)
	s, err := GeneratePKCS11(uri, ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	wrong := hwtest.WritePIN(t, filepath.Join(t.TempDir(), "wrong"), "0000")
	// The same module, where anyone could replace it (the client is root).
	openDir := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(openDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(openDir, 0o777); err != nil {
		t.Fatal(err)
	}
	lib, err := os.ReadFile(h.Module)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(openDir, "p11.so"), lib, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, uri, want string
	}{
		{"wrong PIN", h.URI("dev", wrong), "wrong PIN"},
		{"token not present", strings.Replace(uri, "token=sallyport-test", "token=alice-card", 1), `token "alice-card" is not present`},
		{"no such key", h.URI("other", pin), "no such key"},
		{"no PIN", h.URI("dev", ""), "needs a PIN"},
		{"module missing", strings.Replace(uri, h.Module, "/nonexistent/p11.so", 1), "middleware installed"},
		{"module others may replace", strings.Replace(uri, h.Module, filepath.Join(openDir, "p11.so"), 1), "writable by others"},
	} {
		_, err := Open(Ref{PKCS11: tc.uri})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := GeneratePKCS11(uri, ECDSAP256); err == nil || !strings.Contains(err.Error(), "exists already") {
		t.Errorf("second key with one label: %v", err)
	}
}

// TestPKCS11PinState: the token's PIN flags in words.
func TestPKCS11PinState(t *testing.T) {
	for flags, want := range map[uint]string{
		pkcs11.CKF_USER_PIN_LOCKED:    "locked",
		pkcs11.CKF_USER_PIN_FINAL_TRY: "ONE try is left",
		pkcs11.CKF_USER_PIN_COUNT_LOW: "few tries are left",
		0:                             "",
	} {
		if got := pinState(flags); (want == "" && got != "") || !strings.Contains(got, want) {
			t.Errorf("flags %x: %q, want %q", flags, got, want)
		}
	}
}
