package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// ErrNoIssuer means a CRL was not signed by any of the trusted issuers.
var ErrNoIssuer = errors.New("CRL not signed by a trusted issuer")

// Revocation reason codes (RFC 5280 5.3.1) by name, as used by the CLI.
var reasonNames = []string{
	0:  "unspecified",
	1:  "keyCompromise",
	2:  "cACompromise",
	3:  "affiliationChanged",
	4:  "superseded",
	5:  "cessationOfOperation",
	6:  "certificateHold",
	8:  "removeFromCRL",
	9:  "privilegeWithdrawn",
	10: "aACompromise",
}

// ReasonString names an RFC 5280 revocation reason code ("unspecified" for 0,
// "reason(N)" for codes without a name).
func ReasonString(code int) string {
	if code >= 0 && code < len(reasonNames) && reasonNames[code] != "" {
		return reasonNames[code]
	}
	return fmt.Sprintf("reason(%d)", code)
}

// ReasonNames lists the revocation reasons ParseReason takes by name, for
// help and shell completion (removeFromCRL is not one: revocations are
// permanent).
func ReasonNames() []string {
	var out []string
	for code, name := range reasonNames {
		if name != "" && code != 8 {
			out = append(out, name)
		}
	}
	return out
}

// ParseReason maps a reason name (case-insensitive, e.g. "keyCompromise") or
// its number to the RFC 5280 code. removeFromCRL is refused: this CA never
// un-revokes.
func ParseReason(s string) (int, error) {
	for code, name := range reasonNames {
		if name != "" && (equalFold(name, s) || fmt.Sprint(code) == s) {
			if code == 8 {
				return 0, errors.New("reason removeFromCRL is not supported: revocations are permanent")
			}
			return code, nil
		}
	}
	return 0, fmt.Errorf("unknown revocation reason %q (want one of unspecified, keyCompromise, cACompromise, affiliationChanged, superseded, cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise)", s)
}

func equalFold(a, b string) bool { return bytes.EqualFold([]byte(a), []byte(b)) }

// RevocationList is a set of verified CRLs: the revoked serials per issuer.
// The zero value and a nil pointer revoke nothing.
type RevocationList struct {
	crls    []*x509.RevocationList
	revoked map[revKey]int // reason code
	serials map[string]int // FormatSerial -> reason code, whatever the issuer (RevokedSerial)
}

type revKey struct {
	issuer string // raw DER of the issuer name
	serial string // FormatSerial
}

// LoadCRL reads a file with one or more PEM "X509 CRL" blocks, or one DER
// CRL, and verifies that every CRL in it is signed by one of issuers.
func LoadCRL(path string, issuers []*x509.Certificate) (*RevocationList, error) {
	data, err := ReadPEMFile(path)
	if err != nil {
		return nil, fmt.Errorf("load CRL: %w", err)
	}
	rl, err := ParseCRL(data, issuers)
	if err != nil {
		return nil, fmt.Errorf("load CRL %s: %w", path, err)
	}
	return rl, nil
}

// ParseCRL parses one or more PEM "X509 CRL" blocks (or a single DER CRL) and
// verifies each against issuers: the CRL's issuer name must equal an issuer's
// subject and its signature must verify with that issuer's key.
func ParseCRL(data []byte, issuers []*x509.Certificate) (*RevocationList, error) {
	var ders [][]byte
	if bytes.Contains(data, []byte("-----BEGIN")) {
		rest := data
		for {
			var block *pem.Block
			block, rest = pem.Decode(rest)
			if block == nil {
				break
			}
			if block.Type == "X509 CRL" {
				ders = append(ders, block.Bytes)
			}
		}
		if len(ders) == 0 {
			return nil, errors.New(`no PEM "X509 CRL" block found`)
		}
	} else {
		if len(bytes.TrimSpace(data)) == 0 {
			return nil, errors.New("empty CRL file")
		}
		ders = [][]byte{data}
	}
	rl := &RevocationList{revoked: make(map[revKey]int), serials: make(map[string]int)}
	for i, der := range ders {
		c, err := x509.ParseRevocationList(der)
		if err != nil {
			return nil, fmt.Errorf("CRL %d: %w", i+1, err)
		}
		if err := checkCRLIssuer(c, issuers); err != nil {
			return nil, fmt.Errorf("CRL %d (issuer %s): %w", i+1, NameString(c.Issuer), err)
		}
		rl.crls = append(rl.crls, c)
		for _, e := range c.RevokedCertificateEntries {
			if e.SerialNumber == nil {
				continue
			}
			rl.revoked[revKey{string(c.RawIssuer), FormatSerial(e.SerialNumber)}] = e.ReasonCode
			rl.serials[FormatSerial(e.SerialNumber)] = e.ReasonCode
		}
	}
	return rl, nil
}

func checkCRLIssuer(c *x509.RevocationList, issuers []*x509.Certificate) error {
	var lastErr error
	for _, iss := range issuers {
		if iss == nil || !bytes.Equal(iss.RawSubject, c.RawIssuer) {
			continue
		}
		if err := c.CheckSignatureFrom(iss); err != nil {
			lastErr = err
			continue
		}
		return nil
	}
	if lastErr != nil {
		return fmt.Errorf("%w: %v", ErrNoIssuer, lastErr)
	}
	return ErrNoIssuer
}

// Revoked reports whether cert is listed by a CRL of its issuer (matched by
// serial and issuer name), and the revocation reason name.
func (r *RevocationList) Revoked(cert *x509.Certificate) (revoked bool, reason string) {
	if r == nil || cert == nil || cert.SerialNumber == nil {
		return false, ""
	}
	code, ok := r.revoked[revKey{string(cert.RawIssuer), FormatSerial(cert.SerialNumber)}]
	if !ok {
		return false, ""
	}
	return true, ReasonString(code)
}

// RevokedSerial reports whether serial is listed by any CRL of the set,
// whatever the issuer, and the reason name. The trust decision uses it for
// lineage serials (lineage.go): a renewed certificate names its enrollment
// by serial, and after a CA rotation the CRL that lists the enrollment may
// be signed by the next CA. Every CRL of the set was verified against a
// trusted CA; the serials sallyport's CA draws are random 128-bit numbers.
func (r *RevocationList) RevokedSerial(serial *big.Int) (revoked bool, reason string) {
	if r == nil || serial == nil {
		return false, ""
	}
	code, ok := r.serials[FormatSerial(serial)]
	if !ok {
		return false, ""
	}
	return true, ReasonString(code)
}

// Len is the number of revoked entries.
func (r *RevocationList) Len() int {
	if r == nil {
		return 0
	}
	return len(r.revoked)
}

// NextUpdate is the earliest nextUpdate of the CRLs (zero when none sets it):
// after it the list is stale and should be refreshed.
func (r *RevocationList) NextUpdate() time.Time {
	var t time.Time
	if r == nil {
		return t
	}
	for _, c := range r.crls {
		if !c.NextUpdate.IsZero() && (t.IsZero() || c.NextUpdate.Before(t)) {
			t = c.NextUpdate
		}
	}
	return t
}

// CRLs returns the parsed, verified CRLs.
func (r *RevocationList) CRLs() []*x509.RevocationList {
	if r == nil {
		return nil
	}
	return append([]*x509.RevocationList(nil), r.crls...)
}
