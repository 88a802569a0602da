package pki

import (
	"fmt"
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
