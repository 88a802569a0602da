package hwkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/hwkey/hwtest"
)

// newTPMKey makes a key of alg in tpm and writes its key file.
func newTPMKey(t *testing.T, tpm *hwtest.SWTPM, alg Algorithm) string {
	t.Helper()
	data, s, err := GenerateTPM(tpm.Socket, alg, "test key")
	if err != nil {
		t.Fatalf("GenerateTPM(%s): %v", alg, err)
	}
	s.Close()
	path := filepath.Join(t.TempDir(), "dev.tpmkey")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTPMKeySignsTLS: a key made in the TPM signs in a TLS 1.3 handshake
// whose server verifies the client certificate, for ECDSA P-256 and RSA
// (TLS 1.3 makes RSA sign with PSS), and plain signatures verify with the
// public key from the key file.
func TestTPMKeySignsTLS(t *testing.T) {
	tpm := hwtest.StartSWTPM(t, t.TempDir())
	for _, alg := range []Algorithm{ECDSAP256, RSA2048} {
		t.Run(string(alg), func(t *testing.T) {
			path := newTPMKey(t, tpm, alg)
			s, err := OpenTPM(path, tpm.Socket)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			handshake(t, s)
			d := sha256.Sum256([]byte("sallyport"))
			switch pub := s.Public().(type) {
			case *ecdsa.PublicKey:
				sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
				if err != nil || !ecdsa.VerifyASN1(pub, d[:], sig) {
					t.Fatalf("ECDSA signature does not verify (err %v)", err)
				}
			case *rsa.PublicKey:
				sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
				if err != nil {
					t.Fatal(err)
				}
				if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig); err != nil {
					t.Fatalf("PKCS#1 v1.5 signature: %v", err)
				}
			default:
				t.Fatalf("public key %T", pub)
			}
			if w := s.Where(); !strings.Contains(w, "TPM") || !strings.Contains(w, path) {
				t.Errorf("Where() = %q, want the TPM and the key file", w)
			}
		})
	}
}

// TestTPMKeyFileHoldsNoKey: the key file is a TSS2 key whose private part
// only this TPM can unwrap: no PEM private key a program could use, and
// the attributes say made inside, fixed to this TPM and parent, sign only.
// And the TPM refuses to duplicate (export) it.
func TestTPMKeyFileHoldsNoKey(t *testing.T) {
	tpm := hwtest.StartSWTPM(t, t.TempDir())
	path := newTPMKey(t, tpm, ECDSAP256)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.ParseKey(data); err == nil {
		t.Fatal("the TPM key file parses as a software private key")
	}
	if b, _ := pem.Decode(data); b == nil || b.Type != tssPEMType {
		t.Fatalf("key file is not one %q block", tssPEMType)
	}
	k, err := parseTSSKey(data)
	if err != nil {
		t.Fatal(err)
	}
	a := k.pub.ObjectAttributes
	if !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin || !a.SignEncrypt || a.Decrypt || a.Restricted {
		t.Errorf("device key attributes %+v: want fixedTPM, fixedParent, sensitiveDataOrigin, sign only", a)
	}
	s, err := OpenTPM(path, tpm.Socket)
	if err != nil {
		t.Fatal(err)
	}
	err = s.(*tpmSigner).withKey(func(tp transport.TPM, key tpm2.AuthHandle) error {
		_, err := tpm2.Duplicate{
			ObjectHandle:    tpm2.AuthHandle{Handle: key.Handle, Name: key.Name, Auth: tpm2.PasswordAuth(nil)},
			NewParentHandle: tpm2.NamedHandle{Handle: tpm2.TPMRHNull},
			Symmetric:       tpm2.TPMTSymDef{Algorithm: tpm2.TPMAlgNull},
		}.Execute(tp)
		return err
	})
	if err == nil {
		t.Fatal("the TPM duplicated (exported) the device key")
	}
}

// TestTPMKeySurvivesReboot: after the TPM restarts from its saved state
// (a laptop reboot), the key file loads and signs again, under the same
// storage root key derived anew from the owner seed.
func TestTPMKeySurvivesReboot(t *testing.T) {
	tpm := hwtest.StartSWTPM(t, t.TempDir())
	path := newTPMKey(t, tpm, ECDSAP256)
	tpm.Reboot()
	s, err := OpenTPM(path, tpm.Socket)
	if err != nil {
		t.Fatalf("after reboot: %v", err)
	}
	handshake(t, s)
}

// TestTPMKeyFromAnotherTPM: a key file copied to another machine (another
// TPM) is refused at open, in words.
func TestTPMKeyFromAnotherTPM(t *testing.T) {
	a := hwtest.StartSWTPM(t, t.TempDir())
	b := hwtest.StartSWTPM(t, t.TempDir())
	path := newTPMKey(t, a, ECDSAP256)
	_, err := OpenTPM(path, b.Socket)
	if err == nil || !strings.Contains(err.Error(), "made in another TPM") {
		t.Fatalf("key from another TPM: err %v, want it named as another TPM's", err)
	}
}

// TestTPMMissing: no TPM device gives ErrNoTPM in words.
func TestTPMMissing(t *testing.T) {
	tpm := hwtest.StartSWTPM(t, t.TempDir())
	path := newTPMKey(t, tpm, ECDSAP256)
	_, err := OpenTPM(path, filepath.Join(t.TempDir(), "tpmrm0"))
	if !errors.Is(err, ErrNoTPM) || !strings.Contains(err.Error(), "firmware") {
		t.Fatalf("missing TPM: %v", err)
	}
	if _, _, err := GenerateTPM(filepath.Join(t.TempDir(), "tpmrm0"), ECDSAP256, ""); !errors.Is(err, ErrNoTPM) {
		t.Fatalf("GenerateTPM without a TPM: %v", err)
	}
}

// TestTPMErrorWords: the TPM's busy, lockout and not-ready codes come out
// in words (the codes as the TPM returns them, format 0 and format 1).
func TestTPMErrorWords(t *testing.T) {
	for _, tc := range []struct {
		rc   tpm2.TPMRC
		want string
	}{
		{tpm2.TPMRCLockout, "dictionary-attack lockout"},
		{tpm2.TPMRCRetry, "busy"},
		{tpm2.TPMRCYielded, "busy"},
		{tpm2.TPMRCObjectMemory, "busy"},
		{tpm2.TPMRCBadAuth + 0x100, "owner hierarchy has a password"}, // fmt1, handle 1
		{tpm2.TPMRCInitialize, "not ready"},
		{tpm2.TPMRCFailure, "not ready"},
	} {
		err := tpmError("/dev/tpmrm0", "sign", fmt.Errorf("wrapped: %w", tc.rc))
		if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "/dev/tpmrm0") {
			t.Errorf("%v: %q, want %q", tc.rc, err, tc.want)
		}
	}
}

// TestTPMLockoutOnRealTPM: a TPM put into dictionary-attack lockout (a
// key with a password guessed wrong once, the threshold set to 1) makes a
// password-protected key's use fail with the lockout sentence.
func TestTPMLockoutOnRealTPM(t *testing.T) {
	sw := hwtest.StartSWTPM(t, t.TempDir())
	tp, err := openTPM(sw.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	// TPM2_DictionaryAttackParameters (go-tpm has no struct for it):
	// lockout hierarchy, empty password; max tries 1, recovery 1000 s.
	cmd := []byte{
		0x80, 0x02, 0, 0, 0, 39, 0, 0, 0x01, 0x3a, // TPM_ST_SESSIONS, size, TPM_CC_DictionaryAttackParameters
		0x40, 0, 0, 0x0a, // TPM_RH_LOCKOUT
		0, 0, 0, 9, 0x40, 0, 0, 0x09, 0, 0, 0, 0, 0, // password session, empty
		0, 0, 0, 1, 0, 0, 0x03, 0xe8, 0, 0, 0x03, 0xe8,
	}
	rsp, err := tp.Send(cmd)
	if err != nil || len(rsp) < 10 || rsp[6]|rsp[7]|rsp[8]|rsp[9] != 0 {
		t.Fatalf("DictionaryAttackParameters: %v % x", err, rsp)
	}
	parent, flushParent, err := loadParent(tp, sw.Socket, ownerHierarchy, false)
	if err != nil {
		t.Fatal(err)
	}
	defer flushParent()
	tmpl, _ := deviceKeyTemplate(ECDSAP256)
	tmpl.ObjectAttributes.NoDA = false
	cr, err := tpm2.Create{ParentHandle: parent, InPublic: tpm2.New2B(tmpl),
		InSensitive: tpm2.TPM2BSensitiveCreate{Sensitive: &tpm2.TPMSSensitiveCreate{UserAuth: tpm2.TPM2BAuth{Buffer: []byte("right")}}}}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	lr, err := tpm2.Load{ParentHandle: parent, InPrivate: cr.OutPrivate, InPublic: cr.OutPublic}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	defer flush(tp, lr.ObjectHandle)
	d := sha256.Sum256(nil)
	sign := func(pw string) error {
		_, err := tpm2.Sign{
			KeyHandle:  tpm2.AuthHandle{Handle: lr.ObjectHandle, Name: lr.Name, Auth: tpm2.PasswordAuth([]byte(pw))},
			Digest:     tpm2.TPM2BDigest{Buffer: d[:]},
			InScheme:   tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgECDSA, Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256})},
			Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
		}.Execute(tp)
		return err
	}
	_ = sign("wrong")
	err = sign("right")
	if err == nil {
		t.Fatal("the TPM is not in lockout after a wrong password with max tries 1")
	}
	if msg := tpmError(sw.Socket, "sign", err).Error(); !strings.Contains(msg, "dictionary-attack lockout") {
		t.Fatalf("lockout says %q", msg)
	}
}

// TestParseTSSKeyRefuses: key files sallyport cannot use are refused with
// the reason, before the TPM is asked.
func TestParseTSSKeyRefuses(t *testing.T) {
	tpm := hwtest.StartSWTPM(t, t.TempDir())
	good, err := os.ReadFile(newTPMKey(t, tpm, ECDSAP256))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(good)
	var k tssKeyASN1
	if _, err := asn1.Unmarshal(b.Bytes, &k); err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(*tssKeyASN1)) []byte {
		c := k
		f(&c)
		der, err := asn1.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: tssPEMType, Bytes: der})
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"not PEM", []byte("hello"), "not a TPM key file"},
		{"software key", []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), "not a TPM key file"},
		{"password", mutate(func(c *tssKeyASN1) { c.EmptyAuth = false }), "password"},
		{"importable", mutate(func(c *tssKeyASN1) { c.Type = asn1.ObjectIdentifier{2, 23, 133, 10, 1, 4} }), "not a loadable key"},
		{"bad parent", mutate(func(c *tssKeyASN1) { c.Parent = 0x80000001 }), "parent"},
		{"short public", mutate(func(c *tssKeyASN1) { c.Pubkey = c.Pubkey[:10] }), "public part"},
		{"trailing", append(append([]byte{}, good...), []byte("-----BEGIN TSS2 PRIVATE KEY-----\nAAAA\n-----END TSS2 PRIVATE KEY-----\n")...), ""},
	} {
		_, err := parseTSSKey(tc.data)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
}
