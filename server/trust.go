package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"path"
	"strings"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/server/policy"
)

// trust is everything a reload may change about who gets in and what they
// may reach. It is immutable once built and swapped atomically, so the
// handshake path and the re-check of live sessions always see one
// consistent version.
type trust struct {
	cert      tls.Certificate
	caCerts   []*x509.Certificate
	caPool    *x509.CertPool
	crl       *pki.RevocationList // nil when tls.crl is unset
	policies  *policy.Set
	allowFP   map[string]bool // empty: no fingerprint allowlist
	allowSubj []string        // globs over the RFC 4514 subject; empty: none
	staticCN  map[string]netip.Addr
	staticFP  map[string]netip.Addr
	loadedAt  time.Time
}

// loadTrust reads the certificate, CA, CRL and policy files named by c.
func loadTrust(c *Config) (*trust, error) {
	cert, err := tls.LoadX509KeyPair(c.TLS.Cert, c.TLS.Key)
	if err != nil {
		return nil, fmt.Errorf("load gateway certificate %s / key %s: %w", c.TLS.Cert, c.TLS.Key, err)
	}
	cas, err := pki.LoadCertificates(c.TLS.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("load tls.client_ca %s: %w", c.TLS.ClientCA, err)
	}
	t := &trust{
		cert:     cert,
		caCerts:  cas,
		caPool:   pki.NewPool(cas),
		allowFP:  map[string]bool{},
		staticCN: map[string]netip.Addr{},
		staticFP: map[string]netip.Addr{},
		loadedAt: time.Now(),
	}
	if c.TLS.CRL != "" {
		if t.crl, err = pki.LoadCRL(c.TLS.CRL, cas); err != nil {
			return nil, fmt.Errorf("load tls.crl %s: %w", c.TLS.CRL, err)
		}
	}
	if t.policies, err = policy.Compile(c.Policies); err != nil {
		return nil, fmt.Errorf("config %s: %w", c.Path, err)
	}
	for _, f := range c.TLS.AllowFingerprints {
		n, err := pki.NormalizeFingerprint(f)
		if err != nil {
			return nil, fmt.Errorf("config %s: key \"tls.allow_fingerprints\": %w", c.Path, err)
		}
		t.allowFP[n] = true
	}
	for _, s := range c.TLS.AllowSubjects {
		if _, err := path.Match(s, ""); err != nil {
			return nil, fmt.Errorf("config %s: key \"tls.allow_subjects\": bad pattern %q: %w", c.Path, s, err)
		}
		t.allowSubj = append(t.allowSubj, s)
	}
	for _, d := range c.Devices {
		a := netip.MustParseAddr(d.IPv4) // validated in normalize
		if d.CN != "" {
			t.staticCN[d.CN] = a
		} else {
			n, err := pki.NormalizeFingerprint(d.Fingerprint)
			if err != nil {
				return nil, fmt.Errorf("config %s: [[device]] fingerprint %q: %w", c.Path, d.Fingerprint, err)
			}
			t.staticFP[n] = a
		}
	}
	return t, nil
}

// staticAddrs lists every reserved address.
func (t *trust) staticAddrs() []netip.Addr {
	var out []netip.Addr
	for _, a := range t.staticCN {
		out = append(out, a)
	}
	for _, a := range t.staticFP {
		out = append(out, a)
	}
	return out
}

// staticFor is the device's reserved address, if any.
func (t *trust) staticFor(id pki.Identity) netip.Addr {
	if a, ok := t.staticFP[id.Fingerprint]; ok {
		return a
	}
	return t.staticCN[id.Device]
}

// Refusal reasons, logged as reason=... on "handshake refused" and
// "session closed" lines.
const (
	reasonUnknownCA      = "unknown-ca"
	reasonRevoked        = "revoked"
	reasonExpired        = "expired"
	reasonBadEKU         = "bad-eku"
	reasonNoCert         = "no-cert"
	reasonNoPolicy       = "no-policy"
	reasonNotAllowlisted = "not-allowlisted"
	reasonHandshake      = "handshake-failed"
)

// refusal is a verification failure with its log reason.
type refusal struct {
	reason string
	device string
	err    error
}

func (r *refusal) Error() string { return r.reason + ": " + r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

// check decides whether the verified chain may hold a session now, and with
// which grant. It runs in VerifyConnection (new and resumed handshakes) and
// again for every live session on reload.
func (t *trust) check(chain []*x509.Certificate, now time.Time) (pki.Identity, *policy.Grant, error) {
	if len(chain) == 0 {
		return pki.Identity{}, nil, &refusal{reasonNoCert, "-", errors.New("no verified certificate chain")}
	}
	leaf := chain[0]
	id := pki.IdentityOf(leaf)
	if now.After(leaf.NotAfter) || now.Before(leaf.NotBefore) {
		return id, nil, &refusal{reasonExpired, id.Device, fmt.Errorf("certificate valid %s to %s", leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339))}
	}
	if revoked, why := t.crl.Revoked(leaf); revoked {
		return id, nil, &refusal{reasonRevoked, id.Device, fmt.Errorf("certificate serial %s revoked (%s)", id.Serial, why)}
	}
	if len(t.allowFP) > 0 || len(t.allowSubj) > 0 {
		ok := t.allowFP[id.Fingerprint]
		for _, g := range t.allowSubj {
			if m, _ := path.Match(g, id.Subject); m {
				ok = true
			}
		}
		if !ok {
			return id, nil, &refusal{reasonNotAllowlisted, id.Device, fmt.Errorf("fingerprint %s / subject %q not in tls.allow_fingerprints or tls.allow_subjects", id.Fingerprint, id.Subject)}
		}
	}
	g := t.policies.Lookup(id)
	if g == nil {
		return id, nil, &refusal{reasonNoPolicy, id.Device, fmt.Errorf("no matching policy for subject %q", id.Subject)}
	}
	return id, g, nil
}

// classify turns a handshake error into a refusal with a reason and, where
// the error carries the certificate, the device name.
func classify(err error) *refusal {
	var r *refusal
	if errors.As(err, &r) {
		return r
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return &refusal{reasonUnknownCA, certName(ua.Cert), err}
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) {
		switch ci.Reason {
		case x509.Expired:
			return &refusal{reasonExpired, certName(ci.Cert), err}
		case x509.IncompatibleUsage:
			return &refusal{reasonBadEKU, certName(ci.Cert), err}
		}
		return &refusal{reasonHandshake, certName(ci.Cert), err}
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "didn't provide a certificate"), strings.Contains(msg, "certificate required"):
		return &refusal{reasonNoCert, "-", err}
	case strings.Contains(msg, "incompatible key usage"):
		return &refusal{reasonBadEKU, "-", err}
	case strings.Contains(msg, "expired or is not yet valid"):
		return &refusal{reasonExpired, "-", err}
	case strings.Contains(msg, "unknown authority"):
		return &refusal{reasonUnknownCA, "-", err}
	}
	return &refusal{reasonHandshake, "-", err}
}

func certName(c *x509.Certificate) string {
	if c == nil || c.Subject.CommonName == "" {
		return "-"
	}
	return c.Subject.CommonName
}
