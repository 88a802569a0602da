package pki

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
)

// maxSerialLen bounds the input accepted by ParseSerial (RFC 5280 allows 20
// octets; we leave room for spellings with colons and for lax issuers).
const maxSerialLen = 256

// ParseSerial parses a certificate serial number in any common spelling:
//
//   - hexadecimal, any case, with or without colons or spaces between bytes
//     ("5A:3B:01", "5a3b01", "5a 3b 01"), optionally prefixed by "0x" or by
//     openssl's "serial=";
//   - decimal with an explicit "d:" or "dec:" prefix ("d:5913345").
//
// A bare string of digits is read as hexadecimal, the canonical form of
// [FormatSerial]. Negative serials are rejected.
func ParseSerial(s string) (*big.Int, error) {
	if len(s) > maxSerialLen {
		return nil, fmt.Errorf("serial too long (%d characters)", len(s))
	}
	t := strings.TrimSpace(s)
	low := strings.ToLower(t)
	base := 16
	switch {
	case strings.HasPrefix(low, "d:"):
		base, low = 10, low[2:]
	case strings.HasPrefix(low, "dec:"):
		base, low = 10, low[4:]
	case strings.HasPrefix(low, "serial="):
		low = low[len("serial="):]
	}
	if base == 16 && strings.HasPrefix(low, "0x") {
		low = low[2:]
	}
	var b strings.Builder
	for i := 0; i < len(low); i++ {
		c := low[i]
		switch {
		case base == 16 && (c == ':' || c == ' '):
		case c >= '0' && c <= '9':
			b.WriteByte(c)
		case base == 16 && c >= 'a' && c <= 'f':
			b.WriteByte(c)
		default:
			return nil, fmt.Errorf("serial %q: unexpected character %q", s, c)
		}
	}
	if b.Len() == 0 {
		return nil, fmt.Errorf("serial %q: no digits", s)
	}
	n, ok := new(big.Int).SetString(b.String(), base)
	if !ok {
		return nil, fmt.Errorf("serial %q: not a number", s)
	}
	return n, nil
}

// FormatSerial prints a serial number canonically: lowercase hexadecimal
// without colons or leading zeros ("0" for zero, "" for nil, a leading "-" for
// a negative serial some non-conforming issuers produce).
func FormatSerial(n *big.Int) string {
	if n == nil {
		return ""
	}
	return n.Text(16)
}

// NewSerial returns a random positive serial carrying 128 bits of randomness
// below a fixed top bit (so it is always 17 octets, within RFC 5280's 20),
// whose canonical spelling contains at least one hex letter, so it can never
// be mistaken for a decimal number.
func NewSerial(r io.Reader) (*big.Int, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [16]byte
	for range 1000 {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("random serial: %w", err)
		}
		n := new(big.Int).SetBytes(b[:])
		n.SetBit(n, 128, 1)
		if strings.ContainsAny(n.Text(16), "abcdef") {
			return n, nil
		}
	}
	return nil, errors.New("random serial: source never produced a usable value")
}
