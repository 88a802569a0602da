package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

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

// gatewayCertCause says in words why the laptop refused the gateway's
// certificate: the names it is valid for and the one this file expects,
// the CA that issued it when it is not the file's, its dates, or the
// laptop's own rule it broke; "" when err says none of these. Everything
// taken from the certificate is cleaned for a terminal (a network that
// intercepts traffic chooses it).
func gatewayCertCause(err error, now time.Time) string {
	var he x509.HostnameError
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var gce *gatewayCertError
	switch {
	case errors.As(err, &gce):
		return clean(gce.msg, 200)
	case errors.As(err, &he) && he.Certificate != nil:
		names := certNames(he.Certificate)
		if names == "" {
			return fmt.Sprintf("the gateway's certificate has no DNS or IP name (subject alternative name), only the common name %q, which is not accepted; server_name in your file is %s",
				clean(he.Certificate.Subject.CommonName, 64), clean(he.Host, 64))
		}
		return fmt.Sprintf("the gateway's certificate is valid for %s, not %s (server_name in your file)", names, clean(he.Host, 64))
	case errors.As(err, &ua):
		issuer := ""
		if ua.Cert != nil {
			name := ua.Cert.Issuer.CommonName
			if name == "" {
				name = pki.NameString(ua.Cert.Issuer)
			}
			issuer = fmt.Sprintf(" (issued by %q)", clean(name, 64))
		}
		return "the CA in your file did not sign this gateway's certificate" + issuer + "; possibly a network that intercepts traffic"
	case errors.As(err, &ci) && ci.Reason == x509.Expired && ci.Cert != nil:
		if now.Before(ci.Cert.NotBefore) {
			return fmt.Sprintf("the gateway's certificate is not valid until %s, and this laptop's clock says %s", ci.Cert.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		return fmt.Sprintf("the gateway's certificate expired on %s", ci.Cert.NotAfter.UTC().Format(time.RFC3339))
	case errors.As(err, &ci) && ci.Reason == x509.IncompatibleUsage:
		return "the gateway's certificate is not made for a server (its extended key usage lacks serverAuth)"
	}
	return ""
}

// certNames lists the DNS names and IP addresses a certificate is valid
// for, at most five, cleaned.
func certNames(c *x509.Certificate) string {
	var names []string
	for _, n := range c.DNSNames {
		names = append(names, clean(n, 64))
	}
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) > 5 {
		names = append(names[:5], fmt.Sprintf("and %d more", len(names)-5))
	}
	return strings.Join(names, ", ")
}

// clean makes text from the network (a close reason, a name in a
// certificate) safe for one line of a log and a terminal: printable ASCII
// only, at most max bytes.
func clean(s string, max int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < max; i++ {
		if s[i] >= 0x20 && s[i] <= 0x7e {
			b.WriteByte(s[i])
		} else {
			b.WriteByte('?')
		}
	}
	return b.String()
}
