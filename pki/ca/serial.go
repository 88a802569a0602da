package ca

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
)

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
