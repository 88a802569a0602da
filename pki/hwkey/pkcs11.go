//go:build pkcs11 && cgo

package hwkey

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

// The PKCS#11 path (built with the pkcs11 tag; cgo): crypto11 holds a
// logged-in session pool to the token and gives a crypto.Signer over the
// key. Before it, a short look through miekg/pkcs11 finds the token and
// reads its flags, so "not present", "PIN locked" and "last try" come out
// in words.

// PKCS11Supported reports whether this binary can use PKCS#11 tokens.
const PKCS11Supported = true

// pkcs11Signer is a device key inside a PKCS#11 token.
type pkcs11Signer struct {
	u   *PKCS11URI
	pin string

	mu  sync.Mutex
	ctx *crypto11.Context
	key crypto11.Signer
	pub crypto.PublicKey
	// imported: the token says the key was not made there or was once
	// extractable, so a copy may exist outside it (said in Where).
	imported bool
	// refused is the login error of a PIN the token refused, and
	// refusedPIN that PIN: it is never tried again (a smart card locks
	// after three), only a changed PIN source is.
	refused    error
	refusedPIN string
}

// pinError is a login the token refused for its PIN (wrong or locked).
type pinError struct{ msg string }

func (e *pinError) Error() string { return e.msg }

func openPKCS11(u *PKCS11URI) (Signer, error) {
	pin, err := ReadPIN(u.PINSource)
	if err != nil {
		return nil, err
	}
	s := &pkcs11Signer{u: u, pin: pin}
	if err := s.open(); err != nil {
		return nil, err
	}
	s.pub = s.key.Public()
	return s, nil
}

// open logs in to the token and finds the key. The public key the signer
// was opened with (s.pub) stays: a key found later must be that one.
func (s *pkcs11Signer) open() error {
	ctx, err := configure(s.u, s.pin)
	if err != nil {
		return err
	}
	key, err := findKey(ctx, s.u)
	if err == nil {
		s.imported, err = keyStaysOnToken(ctx, key, s.u)
	}
	if err != nil {
		ctx.Close()
		return err
	}
	s.ctx, s.key = ctx, key
	return nil
}

// keyStaysOnToken asks the token about a private key: one it would hand
// out (extractable, or not sensitive) is refused, whoever made it. It
// reports whether the key was imported or once extractable (not made on
// the token and never extractable since), so a copy may exist outside.
func keyStaysOnToken(ctx *crypto11.Context, key crypto11.Signer, u *PKCS11URI) (imported bool, err error) {
	attrs, err := ctx.GetAttributes(key, []crypto11.AttributeType{pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE})
	if err != nil {
		return false, fmt.Errorf("PKCS#11 %s: cannot tell whether the token would export the key: %w", u.Describe(), err)
	}
	if !attrTrue(attrs, pkcs11.CKA_SENSITIVE) || attrTrue(attrs, pkcs11.CKA_EXTRACTABLE) {
		return false, fmt.Errorf("PKCS#11 %s: the token would hand this key out (CKA_SENSITIVE false or CKA_EXTRACTABLE true): a device key must stay on it; make one there with sallyport pki csr --pkcs11", u.Describe())
	}
	origin, err := ctx.GetAttributes(key, []crypto11.AttributeType{pkcs11.CKA_NEVER_EXTRACTABLE, pkcs11.CKA_LOCAL})
	if err != nil {
		return true, nil // the token does not say: assume the worst, in words only
	}
	return !attrTrue(origin, pkcs11.CKA_NEVER_EXTRACTABLE) || !attrTrue(origin, pkcs11.CKA_LOCAL), nil
}

func (s *pkcs11Signer) Public() crypto.PublicKey { return s.pub }

func (s *pkcs11Signer) Where() string {
	note := ""
	if s.imported {
		note = "; imported into the token, so a copy may exist outside it"
	}
	return fmt.Sprintf("PKCS#11 %s (%s, module %s%s)", s.u.Describe(), describePublic(s.pub), s.u.ModulePath, note)
}

func (s *pkcs11Signer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil {
		return nil
	}
	err := s.ctx.Close()
	s.ctx, s.key = nil, nil
	return err
}

// Sign signs inside the token. A token that was pulled out and put back
// (the session is gone) is logged in to again once; the key must still
// be the same key.
func (s *pkcs11Signer) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.key != nil {
		sig, err := s.key.Sign(r, digest, opts)
		if err == nil || !sessionLost(err) {
			return sig, s.wrap("sign", err)
		}
	}
	if s.ctx != nil {
		s.ctx.Close()
		s.ctx, s.key = nil, nil
	}
	if err := s.relogin(); err != nil {
		return nil, err
	}
	if !publicEqual(s.key.Public(), s.pub) {
		s.ctx.Close()
		s.ctx, s.key = nil, nil
		return nil, fmt.Errorf("PKCS#11 %s: the key on the token is not the key this device was enrolled with (another card?)", s.u.Describe())
	}
	sig, err := s.key.Sign(r, digest, opts)
	return sig, s.wrap("sign", err)
}

// relogin opens the token again after its session was lost (pulled out
// and put back), with the PIN its source holds now. A PIN the token
// refused before is not tried again: every handshake of a reconnecting
// client would spend one of the token's few tries until it locks.
func (s *pkcs11Signer) relogin() error {
	pin, err := ReadPIN(s.u.PINSource)
	if err != nil {
		return err
	}
	if s.refused != nil && pin == s.refusedPIN {
		return fmt.Errorf("%w; not trying this PIN again (each wrong try brings the token closer to locking): put the right one in %s", s.refused, s.u.PINSource)
	}
	s.pin = pin
	if err := s.open(); err != nil {
		var pe *pinError
		if errors.As(err, &pe) {
			s.refused, s.refusedPIN = err, pin
		}
		return err
	}
	s.refused, s.refusedPIN = nil, ""
	return nil
}

func (s *pkcs11Signer) wrap(doing string, err error) error {
	if err == nil {
		return nil
	}
	return pkcs11Error(s.u, doing, err)
}

func publicEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}

// sessionLost reports an error that a new login may cure.
func sessionLost(err error) bool {
	var pe pkcs11.Error
	if !errors.As(err, &pe) {
		return false
	}
	switch pe {
	case pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_SESSION_CLOSED, pkcs11.CKR_DEVICE_REMOVED,
		pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_OBJECT_HANDLE_INVALID,
		pkcs11.CKR_KEY_HANDLE_INVALID:
		return true
	}
	return false
}

// tokenInfo is what the look before login found.
type tokenInfo struct {
	label string
	flags uint
}

// probe loads the module, finds the token the URI names and reads its
// flags, without logging in. A module another context of this process
// has initialised is used as it is and left initialised.
func probe(u *PKCS11URI) (*tokenInfo, error) {
	if _, err := os.Stat(u.ModulePath); err != nil {
		return nil, fmt.Errorf("PKCS#11 module %s: %w (is the token's middleware installed?)", u.ModulePath, err)
	}
	if err := CheckModule(u.ModulePath); err != nil {
		return nil, err
	}
	p := pkcs11.New(u.ModulePath)
	if p == nil {
		return nil, fmt.Errorf("PKCS#11 module %s could not be loaded (not a PKCS#11 library?)", u.ModulePath)
	}
	defer p.Destroy()
	// The module may be in use in this process already (crypto11 holds
	// the current key while the renewal makes the next one): then it is
	// initialised, and must not be finalised under that user's feet.
	switch err := p.Initialize(); {
	case errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)):
	case err != nil:
		return nil, fmt.Errorf("PKCS#11 module %s: initialize: %w", u.ModulePath, err)
	default:
		defer p.Finalize()
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		return nil, fmt.Errorf("PKCS#11 module %s: list slots: %w", u.ModulePath, err)
	}
	var present []string
	for _, slot := range slots {
		ti, err := p.GetTokenInfo(slot)
		if err != nil {
			continue
		}
		label := strings.TrimRight(ti.Label, " \x00")
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 {
			present = append(present, fmt.Sprintf("%q", label))
		}
		if matchToken(u, slot, label, strings.TrimRight(ti.SerialNumber, " \x00"), ti) {
			return &tokenInfo{label: label, flags: ti.Flags}, nil
		}
	}
	if len(present) == 0 {
		return nil, fmt.Errorf("PKCS#11 %s is not present: the module %s sees no token at all (is the card or key plugged in?)", u.DescribeToken(), u.ModulePath)
	}
	return nil, fmt.Errorf("PKCS#11 %s is not present (is the card or key plugged in?); tokens present: %s", u.DescribeToken(), strings.Join(present, ", "))
}

func matchToken(u *PKCS11URI, slot uint, label, serial string, ti pkcs11.TokenInfo) bool {
	switch {
	case u.Token != "" && u.Token != label:
		return false
	case u.Serial != "" && u.Serial != serial:
		return false
	case u.SlotID != nil && *u.SlotID != slot:
		return false
	case u.Manufacturer != "" && u.Manufacturer != strings.TrimRight(ti.ManufacturerID, " \x00"):
		return false
	case u.Model != "" && u.Model != strings.TrimRight(ti.Model, " \x00"):
		return false
	}
	return true
}

// pinState says what the token's flags tell about the user PIN.
func pinState(flags uint) string {
	switch {
	case flags&pkcs11.CKF_USER_PIN_LOCKED != 0:
		return "the PIN is locked (too many wrong tries): the token's admin must unblock it with the PUK/SO PIN"
	case flags&pkcs11.CKF_USER_PIN_FINAL_TRY != 0:
		return "the token says ONE try is left before the PIN locks"
	case flags&pkcs11.CKF_USER_PIN_COUNT_LOW != 0:
		return "the token says few tries are left before the PIN locks"
	}
	return ""
}

// configure opens a logged-in crypto11 context on the token the URI names.
func configure(u *PKCS11URI, pin string) (*crypto11.Context, error) {
	ti, err := probe(u)
	if err != nil {
		return nil, err
	}
	if ti.flags&pkcs11.CKF_USER_PIN_LOCKED != 0 {
		return nil, fmt.Errorf("PKCS#11 %s: %s", u.Describe(), pinState(ti.flags))
	}
	cfg := &crypto11.Config{Path: u.ModulePath, Pin: pin, LoginNotSupported: pin == "" && ti.flags&pkcs11.CKF_LOGIN_REQUIRED == 0}
	if pin == "" && ti.flags&pkcs11.CKF_LOGIN_REQUIRED != 0 {
		return nil, fmt.Errorf("PKCS#11 %s needs a PIN: add pin-source=file:/path (a file only root may read) to the URI", u.Describe())
	}
	// crypto11 selects by exactly one of these; the probe matched the rest.
	cfg.TokenLabel = ti.label
	ctx, err := crypto11.Configure(cfg)
	if err != nil {
		var pe pkcs11.Error
		if errors.As(err, &pe) && (pe == pkcs11.CKR_PIN_INCORRECT || pe == pkcs11.CKR_PIN_LOCKED) {
			msg := "wrong PIN"
			if pe == pkcs11.CKR_PIN_LOCKED {
				msg = "PIN locked"
			}
			if after, perr := probe(u); perr == nil {
				if st := pinState(after.flags); st != "" {
					msg += "; " + st
				}
			}
			return nil, &pinError{fmt.Sprintf("PKCS#11 %s: %s (PIN from %s)", u.Describe(), msg, u.PINSource)}
		}
		return nil, pkcs11Error(u, "log in", err)
	}
	return ctx, nil
}

func findKey(ctx *crypto11.Context, u *PKCS11URI) (crypto11.Signer, error) {
	var label []byte
	if u.Object != "" {
		label = []byte(u.Object)
	}
	keys, err := ctx.FindKeyPairs(u.ID, label)
	if err != nil {
		return nil, pkcs11Error(u, "find the key", err)
	}
	switch len(keys) {
	case 0:
		return nil, fmt.Errorf("PKCS#11 %s: no such key on the token (made with: sallyport pki csr --pkcs11 URI)", u.Describe())
	case 1:
		return keys[0], nil
	}
	return nil, fmt.Errorf("PKCS#11 %s: %d keys match; add id= to the URI to name one", u.Describe(), len(keys))
}

func pkcs11Error(u *PKCS11URI, doing string, err error) error {
	var pe pkcs11.Error
	if errors.As(err, &pe) {
		switch pe {
		case pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_DEVICE_REMOVED:
			return fmt.Errorf("PKCS#11 %s is not present (could not %s; is the card or key plugged in?)", u.DescribeToken(), doing)
		case pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_DEVICE_MEMORY, pkcs11.CKR_FUNCTION_FAILED:
			return fmt.Errorf("PKCS#11 %s: the token failed to %s: %w", u.Describe(), doing, err)
		}
	}
	return fmt.Errorf("PKCS#11 %s: could not %s: %w", u.Describe(), doing, err)
}

// GeneratePKCS11 makes a new device key inside the token the URI names,
// labelled with its object= (and id=, or a random id), never extractable
// (CKA_EXTRACTABLE false, CKA_SENSITIVE true), and returns a Signer over
// it. It refuses when a key with that label or id already exists.
func GeneratePKCS11(uri string, alg Algorithm) (Signer, error) {
	u, err := ParsePKCS11URI(uri)
	if err != nil {
		return nil, err
	}
	if u.Object == "" {
		return nil, fmt.Errorf("PKCS#11 URI %q: name the new key with object=LABEL", uri)
	}
	pin, err := ReadPIN(u.PINSource)
	if err != nil {
		return nil, err
	}
	ctx, err := configure(u, pin)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			ctx.Close()
		}
	}()
	if existing, err := ctx.FindKeyPairs(nil, []byte(u.Object)); err != nil {
		return nil, pkcs11Error(u, "look for keys", err)
	} else if len(existing) > 0 {
		return nil, fmt.Errorf("PKCS#11 %s: a key with this label exists already; refusing to make a second (pick another object= or delete the old one)", u.Describe())
	}
	id := u.ID
	if len(id) == 0 {
		id = make([]byte, 16)
		if _, err := rand.Read(id); err != nil {
			return nil, err
		}
	}
	pubAttrs, err := crypto11.NewAttributeSetWithIDAndLabel(id, []byte(u.Object))
	if err != nil {
		return nil, err
	}
	privAttrs := pubAttrs.Copy()
	for _, a := range privateTemplate {
		if err := privAttrs.Set(a.t, a.v); err != nil {
			return nil, err
		}
	}
	var key crypto11.Signer
	switch alg {
	case ECDSAP256, "":
		key, err = ctx.GenerateECDSAKeyPairWithAttributes(pubAttrs, privAttrs, elliptic.P256())
	case RSA2048, RSA3072:
		key, err = ctx.GenerateRSAKeyPairWithAttributes(pubAttrs, privAttrs, alg.rsaBits())
	default:
		return nil, fmt.Errorf("key type %q cannot be made in a PKCS#11 token", alg)
	}
	if err != nil {
		return nil, pkcs11Error(u, "generate the key", err)
	}
	// Read back what the token made: a token that ignored the template
	// would leave an exportable key, so check rather than trust.
	if imported, err := keyStaysOnToken(ctx, key, u); err != nil || imported {
		_ = key.Delete()
		if err == nil {
			err = errors.New("it says the key was not made there or was extractable")
		}
		return nil, fmt.Errorf("PKCS#11 %s: the token did not make the key as asked (%v); deleted it, refusing to use this token", u.Describe(), err)
	}
	ok = true
	if u.ID == nil {
		u.ID = id
	}
	return &pkcs11Signer{u: u, pin: pin, ctx: ctx, key: key, pub: key.Public()}, nil
}

// privateTemplate is what GeneratePKCS11 asks of a new private key: on
// the token, behind the PIN, never readable or exportable, signing only.
// (A variable so a test can play a token that ignores part of it.)
var privateTemplate = []struct {
	t crypto11.AttributeType
	v any
}{
	{pkcs11.CKA_TOKEN, true}, {pkcs11.CKA_PRIVATE, true}, {pkcs11.CKA_SENSITIVE, true},
	{pkcs11.CKA_EXTRACTABLE, false}, {pkcs11.CKA_SIGN, true}, {pkcs11.CKA_DECRYPT, false},
}

func attrTrue(set crypto11.AttributeSet, t crypto11.AttributeType) bool {
	a, ok := set[t]
	return ok && len(a.Value) == 1 && a.Value[0] != 0
}

// DeleteKey removes a key GeneratePKCS11 made that will never be used (a
// renewal that failed). A TPM key has nothing to remove (its key file is
// the caller's).
func DeleteKey(s Signer) error {
	ps, ok := s.(*pkcs11Signer)
	if !ok {
		return nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.key == nil {
		return nil
	}
	return ps.key.Delete()
}
