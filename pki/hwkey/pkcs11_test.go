//go:build pkcs11 && cgo

package hwkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
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

// tokenOp runs op on a raw session with the token of h, from this process
// (the module is shared with crypto11's contexts, so what op does, they
// see): the test's hand on the token.
func tokenOp(t *testing.T, h *hwtest.SoftHSM, op func(p *pkcs11.Ctx, slot uint)) {
	t.Helper()
	p := pkcs11.New(h.Module)
	if p == nil {
		t.Fatal("load the module")
	}
	defer p.Destroy()
	if err := p.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		t.Fatal(err)
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	for _, slot := range slots {
		if ti, err := p.GetTokenInfo(slot); err == nil && strings.TrimRight(ti.Label, " \x00") == h.Label {
			op(p, slot)
			return
		}
	}
	t.Fatalf("token %q not found", h.Label)
}

// pullOut ends every session with the token, as pulling it out and
// putting it back does (the login is gone with them).
func pullOut(t *testing.T, h *hwtest.SoftHSM) {
	t.Helper()
	tokenOp(t, h, func(p *pkcs11.Ctx, slot uint) {
		if err := p.CloseAllSessions(slot); err != nil {
			t.Fatal(err)
		}
	})
}

// asUser runs op in a read-write session logged in with pin.
func asUser(t *testing.T, h *hwtest.SoftHSM, pin string, op func(p *pkcs11.Ctx, se pkcs11.SessionHandle)) {
	t.Helper()
	tokenOp(t, h, func(p *pkcs11.Ctx, slot uint) {
		se, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
		if err != nil {
			t.Fatal(err)
		}
		defer p.CloseSession(se)
		if err := p.Login(se, pkcs11.CKU_USER, pin); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_USER_ALREADY_LOGGED_IN)) {
			t.Fatal(err)
		}
		defer p.Logout(se)
		op(p, se)
	})
}

// TestPKCS11TokenPulledOut: a token taken out and put back mid-session
// (its sessions and login gone) signs again after a new login; a PIN the
// token refuses is tried once, not at every reconnect (a smart card locks
// after three), and the PIN file is read again, so fixing it heals the
// connection; a different key under the same label (another card) is
// refused. Mutations caught: sessionLost not seeing the lost session, the
// refused-PIN guard, keeping the PIN read at start instead of reading the
// source again, dropping the same-key check after a new login.
func TestPKCS11TokenPulledOut(t *testing.T) {
	h, pinFile := newToken(t)
	uri := h.URI("dev", pinFile)
	first, err := GeneratePKCS11(uri, ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	s, err := Open(Ref{PKCS11: uri})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sign := func() error {
		d := sha256.Sum256([]byte("handshake"))
		sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
		if err == nil && !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), d[:], sig) {
			return errors.New("the signature does not verify")
		}
		return err
	}
	if err := sign(); err != nil {
		t.Fatal(err)
	}
	pullOut(t, h)
	if err := sign(); err != nil {
		t.Fatalf("after the token came back: %v", err)
	}

	// The token's PIN was changed (by its owner, elsewhere); the PIN file
	// still has the old one.
	asUser(t, h, h.PIN, func(p *pkcs11.Ctx, se pkcs11.SessionHandle) {
		if err := p.SetPIN(se, h.PIN, "24682468"); err != nil {
			t.Fatal(err)
		}
	})
	pullOut(t, h)
	if err := sign(); err == nil || !strings.Contains(err.Error(), "wrong PIN") {
		t.Fatalf("old PIN after the token came back: %v", err)
	}
	for i := 0; i < 3; i++ {
		if err := sign(); err == nil || !strings.Contains(err.Error(), "not trying this PIN again") {
			t.Fatalf("reconnect %d with the PIN the token refused: %v", i, err)
		}
	}
	hwtest.WritePIN(t, pinFile, "24682468")
	if err := sign(); err != nil {
		t.Fatalf("after the PIN file was fixed: %v", err)
	}

	// Another card with a key of the same label.
	asUser(t, h, "24682468", func(p *pkcs11.Ctx, se pkcs11.SessionHandle) {
		if err := p.FindObjectsInit(se, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, "dev")}); err != nil {
			t.Fatal(err)
		}
		objs, _, err := p.FindObjects(se, 10)
		p.FindObjectsFinal(se)
		if err != nil || len(objs) == 0 {
			t.Fatalf("find the key: %v (%d objects)", err, len(objs))
		}
		for _, o := range objs {
			if err := p.DestroyObject(se, o); err != nil {
				t.Fatal(err)
			}
		}
	})
	other, err := GeneratePKCS11(uri, ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	other.Close()
	pullOut(t, h)
	if err := sign(); err == nil || !strings.Contains(err.Error(), "not the key this device was enrolled with") {
		t.Fatalf("another key under the same label: %v", err)
	}
}

// p256Params is CKA_EC_PARAMS for P-256 (the curve's OID, DER).
var p256Params = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// TestPKCS11KeyTheTokenWouldExport: a key the token would hand out is no
// device key, whether the token made it so against sallyport's template
// (deleted at once) or someone else put it there (refused at open); a key
// imported into the token is used but said to be so. Mutations caught:
// the read-back after generation, the refusal at open, the imported note.
func TestPKCS11KeyTheTokenWouldExport(t *testing.T) {
	h, pinFile := newToken(t)

	// A token that ignores "sensitive, not extractable".
	saved := privateTemplate
	t.Cleanup(func() { privateTemplate = saved })
	privateTemplate = nil
	for _, a := range saved {
		switch a.t {
		case pkcs11.CKA_SENSITIVE:
			a.v = false
		case pkcs11.CKA_EXTRACTABLE:
			a.v = true
		}
		privateTemplate = append(privateTemplate, a)
	}
	if _, err := GeneratePKCS11(h.URI("careless", pinFile), ECDSAP256); err == nil || !strings.Contains(err.Error(), "did not make the key as asked") {
		t.Fatalf("generation on a token that ignored the template: %v", err)
	}
	privateTemplate = saved
	if _, err := Open(Ref{PKCS11: h.URI("careless", pinFile)}); err == nil || !strings.Contains(err.Error(), "no such key") {
		t.Fatalf("the exportable key was left on the token: %v", err)
	}

	// Keys made with the token's own tools that it would hand out: one
	// extractable (wrapped out with any key), one not sensitive (read out
	// as it is).
	for _, k := range []struct {
		label                  string
		sensitive, extractable bool
	}{{"extractable", true, true}, {"readable", false, false}} {
		asUser(t, h, h.PIN, func(p *pkcs11.Ctx, se pkcs11.SessionHandle) {
			_, _, err := p.GenerateKeyPair(se, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)},
				[]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, p256Params),
					pkcs11.NewAttribute(pkcs11.CKA_LABEL, k.label), pkcs11.NewAttribute(pkcs11.CKA_ID, []byte(k.label)), pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true)},
				[]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
					pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, k.sensitive), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, k.extractable),
					pkcs11.NewAttribute(pkcs11.CKA_LABEL, k.label), pkcs11.NewAttribute(pkcs11.CKA_ID, []byte(k.label)), pkcs11.NewAttribute(pkcs11.CKA_SIGN, true)})
			if err != nil {
				t.Fatal(err)
			}
		})
		if _, err := Open(Ref{PKCS11: h.URI(k.label, pinFile)}); err == nil || !strings.Contains(err.Error(), "would hand this key out") {
			t.Errorf("a key the token would hand out (%s): %v", k.label, err)
		}
	}

	// A key made in software and imported: sensitive and not extractable
	// now, but a copy may exist.
	soft, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := soft.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	point, _ := asn1.Marshal(ek.PublicKey().Bytes()) // the uncompressed point as an octet string, as PKCS#11 wants it
	asUser(t, h, h.PIN, func(p *pkcs11.Ctx, se pkcs11.SessionHandle) {
		for _, tmpl := range [][]*pkcs11.Attribute{
			{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, p256Params), pkcs11.NewAttribute(pkcs11.CKA_EC_POINT, point),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, "imported"), pkcs11.NewAttribute(pkcs11.CKA_ID, []byte{2}), pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true)},
			{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true), pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, p256Params),
				pkcs11.NewAttribute(pkcs11.CKA_VALUE, soft.D.FillBytes(make([]byte, 32))),
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, "imported"), pkcs11.NewAttribute(pkcs11.CKA_ID, []byte{2}), pkcs11.NewAttribute(pkcs11.CKA_SIGN, true)},
		} {
			if _, err := p.CreateObject(se, tmpl); err != nil {
				t.Fatal(err)
			}
		}
	})
	s, err := Open(Ref{PKCS11: h.URI("imported", pinFile)})
	if err != nil {
		t.Fatalf("an imported, non-extractable key: %v", err)
	}
	defer s.Close()
	if w := s.Where(); !strings.Contains(w, "imported into the token") {
		t.Errorf("Where() of an imported key = %q", w)
	}
	made, err := GeneratePKCS11(h.URI("made-here", pinFile), ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	made.Close()
	m, err := Open(Ref{PKCS11: h.URI("made-here", pinFile)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if w := m.Where(); strings.Contains(w, "imported") {
		t.Errorf("Where() of a key made on the token = %q", w)
	}
}
