package ca

import (
	"io"
	"math/big"

	"github.com/sallyport/sallyport/pki"
)

// NewSerial is pki.NewSerial: the CA and the gateway's online issuer draw
// serials by the same rule.
func NewSerial(r io.Reader) (*big.Int, error) { return pki.NewSerial(r) }
