package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Check levels.
const (
	LevelOK   = "ok"
	LevelWarn = "warn"
	LevelFail = "FAIL"
)

// Certificate kinds (roles) CheckChain knows.
const (
	KindDevice = "device" // clientAuth leaf held by a laptop
	KindServer = "server" // serverAuth leaf held by a gateway
)

// Finding is the result of one check on a certificate.
type Finding struct {
	Level string // LevelOK, LevelWarn or LevelFail
	Check string // short name: validity, chain, eku, key, ca, revocation, signature
	Msg   string
}

// CheckOptions configures CheckChain.
type CheckOptions struct {
	Roots         []*x509.Certificate // trusted roots (the PKI's root.crt)
	Intermediates []*x509.Certificate // extra intermediates besides the file's own
	CRL           *RevocationList     // optional
	Role          string              // "device", "server" or "" (guess from EKU)
	Now           time.Time           // zero means time.Now()
	SoonDays      int                 // warn when fewer days are left (default 30)
}

// Failed reports whether any finding is a failure.
func Failed(fs []Finding) bool {
	return slices.ContainsFunc(fs, func(f Finding) bool { return f.Level == LevelFail })
}

// CheckChain checks certs[0] as a leaf (the rest of certs help build its
// chain) the way an SSL checker would: validity, chain to a trusted root,
// EKU for its role, key strength, signature algorithm, CA flag, revocation.
func CheckChain(certs []*x509.Certificate, o CheckOptions) []Finding {
	var c checker
	if len(certs) == 0 {
		c.add(LevelFail, "input", "no certificate")
		return c.fs
	}
	c.now = o.Now
	if c.now.IsZero() {
		c.now = time.Now()
	}
	soon := o.SoonDays
	if soon <= 0 {
		soon = 30
	}
	leaf := certs[0]
	c.validity(certs, time.Duration(soon)*24*time.Hour)
	c.chain(leaf, append(slices.Clone(certs[1:]), o.Intermediates...), o.Roots)
	role := c.role(leaf, o.Role)
	if role == KindServer && len(leaf.DNSNames) == 0 && len(leaf.IPAddresses) == 0 {
		c.add(LevelFail, "san", "server certificate has no DNS or IP subject alternative name")
	}
	c.key(leaf)
	switch leaf.SignatureAlgorithm {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1, x509.DSAWithSHA256:
		c.add(LevelFail, "signature", "weak signature algorithm %s", leaf.SignatureAlgorithm)
	}
	if o.CRL != nil {
		c.revocation(leaf, o.CRL)
	}
	return c.fs
}

// checker collects the findings of one CheckChain run.
type checker struct {
	now time.Time
	fs  []Finding
}

func (c *checker) add(level, check, format string, args ...any) {
	c.fs = append(c.fs, Finding{level, check, fmt.Sprintf(format, args...)})
}

// validity reports on the validity period of every certificate in the file:
// a failure when outside it, a warning when fewer than soon is left, and an
// ok line for the leaf.
func (c *checker) validity(certs []*x509.Certificate, soon time.Duration) {
	for i, cert := range certs {
		who := "certificate"
		if i > 0 {
			who = fmt.Sprintf("chain certificate %d (%s)", i, cert.Subject.CommonName)
		}
		left := cert.NotAfter.Sub(c.now)
		switch {
		case c.now.Before(cert.NotBefore):
			c.add(LevelFail, "validity", "%s is not valid yet: starts %s", who, cert.NotBefore.UTC().Format(time.RFC3339))
		case c.now.After(cert.NotAfter):
			c.add(LevelFail, "validity", "%s expired %s", who, cert.NotAfter.UTC().Format(time.RFC3339))
		case left < soon:
			c.add(LevelWarn, "validity", "%s expires soon: %s (%d days left)", who, cert.NotAfter.UTC().Format(time.RFC3339), int(left.Hours()/24))
		case i == 0:
			c.add(LevelOK, "validity", "valid until %s (%d days left)", cert.NotAfter.UTC().Format(time.RFC3339), int(left.Hours()/24))
		}
	}
}

// chain checks that leaf chains to one of roots: a full x509 verification at
// now when the leaf is in its validity; otherwise (already reported by
// validity) a time-independent walk of signatures, so an expired leaf is
// still checked for its issuer.
func (c *checker) chain(leaf *x509.Certificate, intermediates, roots []*x509.Certificate) {
	if len(roots) == 0 {
		c.add(LevelWarn, "chain", "no trusted root given (no PKI directory); chain not checked")
		return
	}
	if c.now.Before(leaf.NotBefore) || c.now.After(leaf.NotAfter) {
		if names, err := walkChain(leaf, intermediates, roots); err != nil {
			c.add(LevelFail, "chain", "does not chain to this PKI's root: %v", err)
		} else {
			c.add(LevelOK, "chain", "signed by this PKI: %s", strings.Join(names, " -> "))
		}
		return
	}
	opts := x509.VerifyOptions{
		Roots:         NewPool(roots),
		Intermediates: NewPool(intermediates),
		CurrentTime:   c.now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		c.add(LevelFail, "chain", "does not chain to this PKI's root: %v", err)
		return
	}
	var names []string
	for _, cert := range chains[0] {
		names = append(names, cert.Subject.CommonName)
	}
	c.add(LevelOK, "chain", "chains to this PKI's root: %s", strings.Join(names, " -> "))
}

// role checks the CA flag and the extended key usages against the role
// asked for (or, when asked is "", the role the EKUs imply) and returns the
// role the rest of the checks use ("" when none fits).
func (c *checker) role(leaf *x509.Certificate, asked string) string {
	role := asked
	client := slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	server := slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	anyEKU := slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny)
	if role == "" && !leaf.IsCA {
		switch {
		case server && !client:
			role = KindServer
		case client && !server:
			role = KindDevice
		}
	}
	switch {
	case leaf.IsCA && (asked != "" || client || server):
		c.add(LevelFail, "ca", "leaf certificate (%s) is marked as a CA", ekuNames(leaf))
	case leaf.IsCA:
		if leaf.CheckSignatureFrom(leaf) == nil {
			c.add(LevelOK, "ca", "root CA certificate")
		} else {
			c.add(LevelOK, "ca", "intermediate CA certificate")
		}
	case anyEKU:
		c.add(LevelFail, "eku", "extended key usage anyExtendedKeyUsage is too broad for a leaf")
	case role == KindDevice && (!client || server || len(leaf.ExtKeyUsage) != 1):
		c.add(LevelFail, "eku", "a device certificate must have exactly the clientAuth extended key usage (has %s)", ekuNames(leaf))
	case role == KindServer && !server:
		c.add(LevelFail, "eku", "a server certificate needs the serverAuth extended key usage (has %s)", ekuNames(leaf))
	case role == "":
		c.add(LevelFail, "eku", "neither a device (clientAuth only) nor a server (serverAuth) certificate: EKU %s", ekuNames(leaf))
	default:
		c.add(LevelOK, "eku", "%s certificate: %s", role, ekuNames(leaf))
	}
	return role
}

// key checks the leaf's public key type and strength.
func (c *checker) key(leaf *x509.Certificate) {
	switch k := leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		if b := k.N.BitLen(); b < 2048 {
			c.add(LevelFail, "key", "RSA %d bits is too weak (want >= 2048)", b)
		} else {
			c.add(LevelOK, "key", "RSA %d bits", b)
		}
	case *ecdsa.PublicKey:
		if b := k.Curve.Params().BitSize; b < 256 {
			c.add(LevelFail, "key", "ECDSA %d bits is too weak", b)
		} else {
			c.add(LevelOK, "key", "ECDSA %s", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
		c.add(LevelOK, "key", "Ed25519")
	default:
		c.add(LevelFail, "key", "unsupported public key type %T", k)
	}
}

// revocation reports whether crl lists leaf, and warns when crl is stale.
func (c *checker) revocation(leaf *x509.Certificate, crl *RevocationList) {
	if ok, reason := crl.Revoked(leaf); ok {
		c.add(LevelFail, "revocation", "revoked (%s)", reason)
	} else {
		c.add(LevelOK, "revocation", "not revoked")
	}
	if nu := crl.NextUpdate(); !nu.IsZero() && c.now.After(nu) {
		c.add(LevelWarn, "revocation", "CRL is stale since %s (run: sallyport pki crl)", nu.UTC().Format(time.RFC3339))
	}
}

func ekuNames(c *x509.Certificate) string {
	var s []string
	for _, e := range c.ExtKeyUsage {
		switch e {
		case x509.ExtKeyUsageClientAuth:
			s = append(s, "clientAuth")
		case x509.ExtKeyUsageServerAuth:
			s = append(s, "serverAuth")
		case x509.ExtKeyUsageAny:
			s = append(s, "any")
		default:
			s = append(s, fmt.Sprintf("eku(%d)", e))
		}
	}
	for _, o := range c.UnknownExtKeyUsage {
		s = append(s, o.String())
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

// walkChain follows issuer signatures from leaf through intermediates to one
// of roots, ignoring validity periods.
func walkChain(leaf *x509.Certificate, intermediates, roots []*x509.Certificate) ([]string, error) {
	names := []string{leaf.Subject.CommonName}
	cur := leaf
	for depth := 0; depth < 8; depth++ {
		for _, r := range roots {
			if bytes.Equal(cur.RawIssuer, r.RawSubject) && cur.CheckSignatureFrom(r) == nil {
				return append(names, r.Subject.CommonName), nil
			}
		}
		var next *x509.Certificate
		for _, c := range intermediates {
			if c != cur && bytes.Equal(cur.RawIssuer, c.RawSubject) && cur.CheckSignatureFrom(c) == nil {
				next = c
				break
			}
		}
		if next == nil {
			return nil, fmt.Errorf("no trusted issuer %q found for %q", cur.Issuer, cur.Subject)
		}
		names = append(names, next.Subject.CommonName)
		cur = next
	}
	return nil, errors.New("chain too long")
}
