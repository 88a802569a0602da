package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"

	"github.com/sallyport/sallyport/pki"
)

// errPinMismatch is wrapped by the error for a gateway certificate whose
// fingerprint is not tls.pin_sha256.
var errPinMismatch = errors.New("gateway certificate does not match tls.pin_sha256")

// gatewayCertError is a gateway certificate that chains to the CA but that
// the laptop still refuses (wrong kind of certificate or wrong pin).
type gatewayCertError struct {
	msg string
	err error // errPinMismatch or nil
}

func (e *gatewayCertError) Error() string { return e.msg }
func (e *gatewayCertError) Unwrap() error { return e.err }

// verifyGateway is the laptop's own check of the gateway's leaf, run after
// crypto/tls verified the chain to tls.ca and the server name. Go's
// verifier accepts a leaf with no EKU extension or with
// anyExtendedKeyUsage, and a leaf marked CA:TRUE; a VPN gateway needs
// none of that, so the leaf must list serverAuth explicitly and must not
// be a CA. When pin is set the leaf's SHA-256 fingerprint must equal it.
func verifyGateway(cs tls.ConnectionState, pin string) error {
	if len(cs.PeerCertificates) == 0 {
		return &gatewayCertError{msg: "gateway sent no certificate"}
	}
	leaf := cs.PeerCertificates[0]
	if leaf.BasicConstraintsValid && leaf.IsCA {
		return &gatewayCertError{msg: fmt.Sprintf("gateway certificate %q is a CA certificate (CA:TRUE); a gateway must use a leaf certificate", leaf.Subject.CommonName)}
	}
	if !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth) {
		what := "does not list serverAuth in its extended key usage"
		switch {
		case len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0:
			what = "has no extended key usage; serverAuth is required"
		case slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny):
			what = "has anyExtendedKeyUsage instead of serverAuth; serverAuth must be listed explicitly"
		}
		return &gatewayCertError{msg: fmt.Sprintf("gateway certificate %q %s", leaf.Subject.CommonName, what)}
	}
	if pin != "" {
		if got := pki.Fingerprint(leaf); got != pin {
			return &gatewayCertError{msg: fmt.Sprintf("gateway certificate fingerprint %s does not match tls.pin_sha256 %s", got, pin), err: errPinMismatch}
		}
	}
	return nil
}
