package server

// The trust decision (ARCHITECTURE.md, "Trust").
//
// Exactly one function, trust.decide, says whether a certificate chain may
// hold a session now and with which grant. It runs
//   - in VerifyConnection of every TLS handshake, full or resumed
//     (server.go handshakeConfig),
//   - once more right before a session goes live (session.go register),
//     against the trust in force at that moment, so a reload between the
//     handshake and the device's hello is never missed,
//   - for every live session on every reload (server.go recheckSessions).
//
// The checks, in order: a certificate was presented; the chain verifies
// against the CA pool in force (crypto/tls does not verify it: the gateway
// asks for any certificate and verifies here, so a reload that replaces
// client_ca is applied to live sessions too); every certificate of the chain
// is inside its validity; the leaf is not a CA and lists the clientAuth EKU
// explicitly (no EKU extension and anyExtendedKeyUsage are refused unless
// tls.accept_any_eku is set); no certificate of the chain but the trust
// anchor is revoked by the CRL, nor a renewed leaf's lineage (the serial
// of its enrollment) or its own serial by any CRL; for a new session, the
// CRL is not stale
// (tls.crl_stale); the fingerprint/subject allowlists; at least one policy.

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/netip"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/tomlconf"
	"github.com/sallyport/sallyport/internal/userfile"
	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/server/policy"
	"github.com/sallyport/sallyport/tunnel"
)

// trust is everything a reload may change about who gets in and what they
// may reach. It is immutable once built and swapped atomically, so the
// handshake path and the re-check of live sessions always see one
// consistent version.
type trust struct {
	cert      tls.Certificate
	caCerts   []*x509.Certificate
	caPool    *x509.CertPool
	caDigest  [32]byte            // identifies caCerts: a chain verified under the same CAs is reused on re-check
	crl       *pki.RevocationList // nil when tls.crl is unset
	crlPath   string              // file the CRL came from ("" when none)
	crlStale  string              // "refuse" or "warn"
	anyEKU    bool                // tls.accept_any_eku
	policies  *policy.Set
	own       *policy.Own     // the gateway's own addresses (own.go): kept across reloads
	allowFP   map[string]bool // empty: no fingerprint allowlist
	allowSubj []string        // globs over the RFC 4514 subject; empty: none
	staticCN  map[string]staticAddr
	staticFP  map[string]staticAddr
	loadedAt  time.Time
	warnings  []string // things the admin should know about this version (logged on load)
	renew     *renewer // the online issuer (renew.go); nil without [renewal]
}

// loadTrust reads the certificate, CA, CRL and policy files named by c.
// prev is the trust in force (nil at start): a reload may not turn
// revocation off by dropping tls.crl, nor replace the CRL with an older one.
func loadTrust(c *Config, prev *trust) (*trust, error) {
	if err := pki.CheckKeyPerm(c.TLS.Key); err != nil {
		return nil, &fileError{"gateway key tls.key", c.TLS.Key, err}
	}
	cert, err := pki.LoadKeyPair(c.TLS.Cert, c.TLS.Key)
	if err != nil {
		var pe *fs.PathError
		switch {
		case errors.As(err, &pe) && pe.Path == c.TLS.Key:
			return nil, &fileError{"gateway key tls.key", c.TLS.Key, err}
		case errors.As(err, &pe) && pe.Path == c.TLS.Cert:
			return nil, &fileError{"gateway certificate tls.cert", c.TLS.Cert, err}
		}
		return nil, fmt.Errorf("gateway certificate tls.cert %s and key tls.key %s: %w", c.TLS.Cert, c.TLS.Key, err)
	}
	data, err := pki.ReadPEMFile(c.TLS.ClientCA)
	if err != nil {
		return nil, &fileError{"tls.client_ca", c.TLS.ClientCA, err}
	}
	cas, err := pki.ParseCertificatesPEM(data)
	if err != nil {
		return nil, &fileError{"tls.client_ca", c.TLS.ClientCA, err}
	}
	t := &trust{
		cert:     cert,
		caCerts:  cas,
		caPool:   pki.NewPool(cas),
		caDigest: digestCerts(cas),
		crlStale: c.TLS.CRLStale,
		anyEKU:   c.TLS.AcceptAnyEKU,
		staticCN: map[string]staticAddr{},
		staticFP: map[string]staticAddr{},
		loadedAt: time.Now(),
	}
	if err := t.loadCRL(c, prev); err != nil {
		return nil, err
	}
	if c.Renewal.Enabled() {
		var warn []string
		if t.renew, warn, err = loadRenewer(c, t.caPool); err != nil {
			return nil, err
		}
		t.warnings = append(t.warnings, warn...)
	}
	if prev != nil {
		t.own = prev.own
	} else {
		t.own = policy.NewOwn(ownAddrs(c)...)
	}
	if t.policies, err = policy.CompileOwn(c.Policies, t.own); err != nil {
		return nil, policyWhere(c.Path, err)
	}
	t.warnings = append(t.warnings, t.policies.UnreachableDNS()...)
	if err := t.loadAllowlists(c); err != nil {
		return nil, err
	}
	for i, d := range c.Devices {
		var a staticAddr // validated in normalize
		if d.IPv4 != "" {
			a.v4 = netip.MustParseAddr(d.IPv4)
		}
		if d.IPv6 != "" {
			a.v6 = netip.MustParseAddr(d.IPv6)
		}
		if d.CN != "" {
			t.staticCN[d.CN] = a
		} else {
			n, err := pki.NormalizeFingerprint(d.Fingerprint)
			if err != nil {
				return nil, tomlconf.Where(c.Path, fmt.Errorf("[[device]] #%d: key \"fingerprint\": %q: %w", i+1, d.Fingerprint, err))
			}
			t.staticFP[n] = a
		}
	}
	return t, nil
}

// fileError is a file a key names that cannot be used, said once: "tls.crl
// /etc/sallyport/pki/crl.pem: no such file or directory", not the read's
// own "load CRL: stat /etc/...: ..." after it. It wraps the cause (an
// *fs.PathError stays findable for the hints that name a fix).
type fileError struct {
	what, path string
	err        error
}

func (e *fileError) Error() string {
	return e.what + " " + e.path + ": " + userfile.Cause(e.err).Error()
}
func (e *fileError) Unwrap() error { return e.err }

// policyWhere puts an error of policy.CompileOwn at the line of the
// [[policy]] and key it is about: "server.toml:31: [[policy]] #2 "eng":
// allow ...", the form of the loader's own errors.
func policyWhere(path string, err error) error {
	var pe *policy.Error
	if !errors.As(err, &pe) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	head := fmt.Sprintf("[[policy]] #%d", pe.Index+1)
	if pe.Name != "" {
		head += fmt.Sprintf(" %q", pe.Name)
	}
	return tomlconf.WhereElement(path, "policy", pe.Index, pe.Key, head+": "+pe.Err.Error(), err)
}

// loadAllowlists parses tls.allow_fingerprints and tls.allow_subjects.
func (t *trust) loadAllowlists(c *Config) error {
	t.allowFP = map[string]bool{}
	for _, f := range c.TLS.AllowFingerprints {
		n, err := pki.NormalizeFingerprint(f)
		if err != nil {
			return tomlconf.Where(c.Path, fmt.Errorf("key \"tls.allow_fingerprints\": %w", err))
		}
		t.allowFP[n] = true
	}
	for _, s := range c.TLS.AllowSubjects {
		if _, err := path.Match(s, ""); err != nil {
			return tomlconf.Where(c.Path, fmt.Errorf("key \"tls.allow_subjects\": bad pattern %q: %w", s, err))
		}
		t.allowSubj = append(t.allowSubj, s)
	}
	return nil
}

// loadCRL loads tls.crl into t. Against the CRL in force (prev) it refuses
// a CRL whose number went backwards for the same issuer (an old file synced
// over a new one would un-revoke devices), and keeps the running CRL when
// the key was removed: revocation is only turned off by a restart.
func (t *trust) loadCRL(c *Config, prev *trust) error {
	var old *pki.RevocationList
	if prev != nil {
		old = prev.crl
	}
	if c.TLS.CRL == "" {
		if old != nil {
			t.crl, t.crlPath = old, prev.crlPath
			t.warnings = append(t.warnings, fmt.Sprintf("key \"tls.crl\" was removed from %s; the CRL %s stays in force until the gateway restarts", c.Path, prev.crlPath))
		}
		return nil
	}
	data, err := pki.ReadPEMFile(c.TLS.CRL)
	if err != nil {
		return &fileError{"tls.crl", c.TLS.CRL, err}
	}
	crl, err := pki.ParseCRL(data, t.caCerts)
	if err != nil {
		return &fileError{"tls.crl", c.TLS.CRL, err}
	}
	if err := crlNotOlder(crl, old); err != nil {
		return &fileError{"tls.crl", c.TLS.CRL, err}
	}
	t.crl, t.crlPath = crl, c.TLS.CRL
	return nil
}

// crlNotOlder refuses a new CRL set in which an issuer's CRL number is
// lower than the one in force.
func crlNotOlder(next, cur *pki.RevocationList) error {
	for _, o := range cur.CRLs() {
		for _, n := range next.CRLs() {
			if !bytes.Equal(o.RawIssuer, n.RawIssuer) || o.Number == nil || n.Number == nil {
				continue
			}
			if n.Number.Cmp(o.Number) < 0 {
				return fmt.Errorf("CRL number %s of issuer %q is lower than the %s in force: refusing to go back to an older CRL (keeping the current one)",
					n.Number, pki.NameString(n.Issuer), o.Number)
			}
		}
	}
	return nil
}

// crlNumber is the highest CRL number in force (nil when none).
func (t *trust) crlNumber() *big.Int {
	var nums []*big.Int
	for _, c := range t.crl.CRLs() {
		if c.Number != nil {
			nums = append(nums, c.Number)
		}
	}
	if len(nums) == 0 {
		return nil
	}
	return slices.MaxFunc(nums, (*big.Int).Cmp)
}

// crlStaleAt reports whether the CRL is past its nextUpdate at now.
func (t *trust) crlStaleAt(now time.Time) bool {
	nu := t.crl.NextUpdate()
	return t.crl != nil && !nu.IsZero() && now.After(nu)
}

func digestCerts(certs []*x509.Certificate) [32]byte {
	h := sha256.New()
	for _, c := range certs {
		h.Write(c.Raw)
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// staticAddr is a [[device]]'s reserved addresses; either may be zero.
type staticAddr struct{ v4, v6 netip.Addr }

// staticAddrs lists every reserved address, of both families.
func (t *trust) staticAddrs() []netip.Addr {
	var out []netip.Addr
	for _, m := range []map[string]staticAddr{t.staticCN, t.staticFP} {
		for _, a := range m {
			for _, x := range []netip.Addr{a.v4, a.v6} {
				if x.IsValid() {
					out = append(out, x)
				}
			}
		}
	}
	return out
}

// staticFor is the device's reserved addresses, if any.
func (t *trust) staticFor(id pki.Identity) staticAddr {
	if a, ok := t.staticFP[id.Fingerprint]; ok {
		return a
	}
	return t.staticCN[id.Device]
}

// refusal is a verification failure with its log reason.
type refusal struct {
	reason tunnel.Reason
	device string
	err    error
}

func (r *refusal) Error() string { return string(r.reason) + ": " + r.err.Error() }
func (r *refusal) Unwrap() error { return r.err }

// authenticated reports whether the peer proved a key that chains to a
// trusted CA: such a device is told why it is refused (a Close frame with
// the reason) instead of only getting a TLS alert.
func (r *refusal) authenticated() bool {
	return r.reason != tunnel.ReasonUnknownCA && r.reason != tunnel.ReasonNoCert && r.reason != tunnel.ReasonHandshake && r.reason != tunnel.ReasonOverload &&
		r.reason != tunnel.ReasonGatewayCert
}

// purpose says what a decision is for: a stale CRL refuses new sessions
// but does not cut live ones.
type purpose int

const (
	forNewSession purpose = iota
	forRecheck
)

// verdict is what decide concluded: the identity and grant of an admitted
// device, and the verified chain (leaf first) so a re-check under the same
// CAs does not build it again.
type verdict struct {
	id       pki.Identity
	grant    *policy.Grant
	chain    []*x509.Certificate
	caDigest [32]byte
}

// decide is the trust decision: whether the certificates a device
// presented (leaf first, as sent) may hold a session at now. prev, when not
// nil, is an earlier verdict for the same certificates; its chain is reused
// when the CA set has not changed since. See the file comment for the
// order of the checks.
func (t *trust) decide(peer []*x509.Certificate, prev *verdict, now time.Time, why purpose) (verdict, error) {
	if len(peer) == 0 || peer[0] == nil {
		return verdict{}, &refusal{tunnel.ReasonNoCert, "-", errors.New("no client certificate")}
	}
	leaf := peer[0]
	id := pki.IdentityOf(leaf)
	v := verdict{id: id, caDigest: t.caDigest}
	if prev != nil && prev.caDigest == t.caDigest && len(prev.chain) > 0 {
		v.chain = prev.chain
	} else {
		chain, err := t.verifyChain(peer, now)
		if err != nil {
			return v, err
		}
		v.chain = chain
	}
	for i, c := range v.chain {
		if now.Before(c.NotBefore) || now.After(c.NotAfter) {
			who := "certificate"
			if i > 0 {
				who = fmt.Sprintf("issuing CA %q", c.Subject.CommonName)
			}
			return v, &refusal{tunnel.ReasonExpired, id.Device, fmt.Errorf("%s valid %s to %s", who,
				c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))}
		}
	}
	if err := checkNotCA(leaf, id); err != nil {
		return v, err
	}
	if err := t.checkEKU(v.chain); err != nil {
		return v, &refusal{tunnel.ReasonBadEKU, id.Device, err}
	}
	if err := t.checkRevoked(v.chain[:len(v.chain)-1], id); err != nil {
		return v, err
	}
	if err := t.checkLineage(leaf, id); err != nil {
		return v, err
	}
	if why == forNewSession {
		if err := t.checkCRLFresh(now, id); err != nil {
			return v, err
		}
	}
	if err := t.checkAllowlists(id); err != nil {
		return v, err
	}
	if v.grant = t.policies.Lookup(id); v.grant == nil {
		return v, &refusal{tunnel.ReasonNoPolicy, id.Device, fmt.Errorf("no matching policy for subject %q", id.Subject)}
	}
	// Only the issuer's word counts (a certificate policy it signed);
	// nothing the device says about its key does.
	if err := checkHardwareKey(v.grant, id); err != nil {
		v.grant = nil
		return v, err
	}
	return v, nil
}

// checkNotCA refuses a leaf that is a CA certificate (basicConstraints
// CA:TRUE): a device presents its own certificate, never an issuer's.
func checkNotCA(leaf *x509.Certificate, id pki.Identity) error {
	if leaf.IsCA {
		return &refusal{tunnel.ReasonCALeaf, id.Device, errors.New("certificate is a CA certificate (basicConstraints CA:TRUE), not a device certificate")}
	}
	return nil
}

// checkHardwareKey refuses an identity whose grant comes with a policy
// that demands a hardware-held key when its certificate's issuer did not
// record one (attested or vouched for).
func checkHardwareKey(g *policy.Grant, id pki.Identity) error {
	if g == nil || g.RequireHardwareKey == "" || id.KeyOrigin == pki.KeyOriginTPM || id.KeyOrigin == pki.KeyOriginPKCS11 {
		return nil
	}
	return &refusal{tunnel.ReasonHardwareKey, id.Device, fmt.Errorf("policy %q requires a hardware-held device key; certificate serial %s records none (sign its CSR with pki sign --require-hardware, or --key-origin tpm|pkcs11); matching policies %v",
		g.RequireHardwareKey, orDash(id.Serial), g.Names)}
}

// checkRevoked refuses when a certificate of certs (the chain without its
// trust anchor: a revoked intermediate takes every device under it along)
// is on the CRL.
func (t *trust) checkRevoked(certs []*x509.Certificate, id pki.Identity) error {
	for i, c := range certs {
		if revoked, why := t.crl.Revoked(c); revoked {
			who := "certificate serial " + id.Serial
			if i > 0 {
				who = fmt.Sprintf("issuing CA %q (serial %s)", c.Subject.CommonName, pki.FormatSerial(c.SerialNumber))
			}
			return &refusal{tunnel.ReasonRevoked, id.Device, fmt.Errorf("%s revoked (%s)", who, why)}
		}
	}
	return nil
}

// checkLineage refuses a renewed certificate when its enrollment serial
// (its lineage) or its own serial is listed by any CRL in force, whatever
// the CRL's issuer: `pki revoke --device` revokes the enrollment and so
// cuts every renewal of it (pki/lineage.go). It also refuses one when a
// CA that signed a certificate of its lineage (the enrollment's
// intermediate, an online issuer that renewed it before) is listed, unless
// that CA was only retired (reason superseded or cessationOfOperation):
// what a compromised CA signed must not live on through renewals by
// another. A lineage extension that does not decode is refused: whether
// its enrollment was revoked cannot be told.
func (t *trust) checkLineage(leaf *x509.Certificate, id pki.Identity) error {
	l, renewed, err := pki.LineageOf(leaf)
	if err != nil {
		return &refusal{tunnel.ReasonRevoked, id.Device, fmt.Errorf("its lineage extension does not decode, so whether its enrollment was revoked cannot be told: %w", err)}
	}
	if !renewed {
		return nil
	}
	for _, s := range []struct {
		what   string
		serial *big.Int
	}{{"enrollment serial " + l.SerialString() + " (its lineage)", l.Serial}, {"certificate serial " + id.Serial, leaf.SerialNumber}} {
		if revoked, why := t.crl.RevokedSerial(s.serial); revoked {
			return &refusal{tunnel.ReasonRevoked, id.Device, fmt.Errorf("%s revoked (%s)", s.what, why)}
		}
	}
	for _, ca := range l.CAs {
		if revoked, why := t.crl.RevokedSerial(ca); revoked && !retiredCA[why] {
			return &refusal{tunnel.ReasonRevoked, id.Device, fmt.Errorf("CA serial %s, which signed a certificate of its lineage, revoked (%s)", pki.FormatSerial(ca), why)}
		}
	}
	return nil
}

// retiredCA are the revocation reasons that retire a CA without doubting
// what it signed: the renewals descending from it live on (checkLineage).
var retiredCA = map[string]bool{pki.ReasonString(4): true, pki.ReasonString(5): true} // superseded, cessationOfOperation

// checkCRLFresh refuses new sessions while the CRL is past its nextUpdate
// (unless tls.crl_stale = "warn").
func (t *trust) checkCRLFresh(now time.Time, id pki.Identity) error {
	if t.crlStale != CRLStaleWarn && t.crlStaleAt(now) {
		return &refusal{tunnel.ReasonCRLStale, id.Device, fmt.Errorf("the CRL %s is stale (nextUpdate %s): new sessions are refused until it is renewed (tls.crl_stale = \"refuse\")",
			t.crlPath, t.crl.NextUpdate().UTC().Format(time.RFC3339))}
	}
	return nil
}

// hasAllowlists reports whether tls.allow_fingerprints or
// tls.allow_subjects is set.
func (t *trust) hasAllowlists() bool { return len(t.allowFP) > 0 || len(t.allowSubj) > 0 }

// checkAllowlists refuses an identity that neither allowlist names, when
// one is set.
func (t *trust) checkAllowlists(id pki.Identity) error {
	if !t.hasAllowlists() || t.allowFP[id.Fingerprint] {
		return nil
	}
	for _, g := range t.allowSubj {
		if m, _ := path.Match(g, id.Subject); m {
			return nil
		}
	}
	return &refusal{tunnel.ReasonNotAllowlisted, id.Device, fmt.Errorf("fingerprint %s / subject %q not in tls.allow_fingerprints or tls.allow_subjects", id.Fingerprint, id.Subject)}
}

// verifyChain builds a chain from the leaf through the intermediates the
// device sent to a CA of client_ca, at now. The extended key usage is
// checked by decide (checkEKU), by name, so it is not part of the chain
// building. A leaf outside its validity is refused as expired when a
// trusted CA signed it (the device is ours and is told), else as unknown.
func (t *trust) verifyChain(peer []*x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	leaf := peer[0]
	inter := x509.NewCertPool()
	for _, c := range peer[1:] {
		if c != nil {
			inter.AddCert(c)
		}
	}
	opts := x509.VerifyOptions{Roots: t.caPool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		// crypto/x509 stops at the leaf's dates; find out whether a
		// trusted CA issued it at all.
		err := fmt.Errorf("certificate valid %s to %s", leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
		if t.issuedByTrusted(leaf, peer[1:], opts) {
			return nil, &refusal{tunnel.ReasonExpired, certName(leaf), err}
		}
		return nil, &refusal{tunnel.ReasonUnknownCA, certName(leaf), fmt.Errorf("%w, and not issued by a CA of tls.client_ca", err)}
	}
	chains, err := leaf.Verify(opts)
	if err != nil {
		return nil, &refusal{tunnel.ReasonUnknownCA, certName(leaf), fmt.Errorf("certificate chain does not verify against tls.client_ca: %w", err)}
	}
	return chains[0], nil
}

// issuedByTrusted reports whether leaf is signed by a CA of client_ca, or
// by an intermediate the device sent that chains to one now.
func (t *trust) issuedByTrusted(leaf *x509.Certificate, sent []*x509.Certificate, opts x509.VerifyOptions) bool {
	for _, c := range append(slices.Clone(t.caCerts), sent...) {
		if c == nil || !bytes.Equal(c.RawSubject, leaf.RawIssuer) || leaf.CheckSignatureFrom(c) != nil {
			continue
		}
		if slices.ContainsFunc(t.caCerts, c.Equal) {
			return true
		}
		if _, err := c.Verify(opts); err == nil {
			return true
		}
	}
	return false
}

// checkEKU requires the clientAuth extended key usage by name on the leaf,
// and that no issuing CA of the chain restricts its EKUs to exclude it. Go's
// verifier treats a leaf without the extension, or with
// anyExtendedKeyUsage, as fit for any use; a shared enterprise CA issues
// such certificates for other purposes.
func (t *trust) checkEKU(chain []*x509.Certificate) error {
	for _, ca := range chain[1:] {
		if len(ca.ExtKeyUsage) > 0 && !slices.Contains(ca.ExtKeyUsage, x509.ExtKeyUsageClientAuth) && !slices.Contains(ca.ExtKeyUsage, x509.ExtKeyUsageAny) {
			return fmt.Errorf("issuing CA %q may not issue clientAuth certificates (its extended key usage excludes it)", ca.Subject.CommonName)
		}
	}
	leaf := chain[0]
	if slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return nil
	}
	any := slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny)
	none := len(leaf.ExtKeyUsage) == 0 && len(leaf.UnknownExtKeyUsage) == 0
	if t.anyEKU && (any || none) {
		return nil
	}
	switch {
	case none:
		return errors.New("certificate has no extended key usage; a device certificate must list clientAuth (tls.accept_any_eku allows this)")
	case any:
		return errors.New("certificate has anyExtendedKeyUsage, not clientAuth (tls.accept_any_eku allows this)")
	}
	return fmt.Errorf("certificate's extended key usage does not include clientAuth")
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
		return &refusal{tunnel.ReasonUnknownCA, certName(ua.Cert), err}
	}
	var ci x509.CertificateInvalidError
	if errors.As(err, &ci) {
		switch ci.Reason {
		case x509.Expired:
			return &refusal{tunnel.ReasonExpired, certName(ci.Cert), err}
		case x509.IncompatibleUsage:
			return &refusal{tunnel.ReasonBadEKU, certName(ci.Cert), err}
		}
		return &refusal{tunnel.ReasonHandshake, certName(ci.Cert), err}
	}
	if a, ok := tunnel.RemoteAlert(err); ok && certificateAlert(a) {
		// In TLS 1.3 the device checks the gateway's certificate before it
		// sends its own: a certificate alert from it is about ours.
		return &refusal{tunnel.ReasonGatewayCert, "-", fmt.Errorf("the device refused this gateway's certificate (%w): "+
			"the name it expects (its server_name) is not one of tls.cert's names, or the CA in its file did not sign tls.cert; its `sallyport status` says which", err)}
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "didn't provide a certificate"), strings.Contains(msg, "certificate required"):
		return &refusal{tunnel.ReasonNoCert, "-", err}
	case strings.Contains(msg, "incompatible key usage"):
		return &refusal{tunnel.ReasonBadEKU, "-", err}
	case strings.Contains(msg, "expired or is not yet valid"):
		return &refusal{tunnel.ReasonExpired, "-", err}
	case strings.Contains(msg, "unknown authority"):
		return &refusal{tunnel.ReasonUnknownCA, "-", err}
	}
	return &refusal{tunnel.ReasonHandshake, "-", err}
}

// certificateAlert reports whether a TLS alert from the peer is about a
// certificate (RFC 8446 6.2: bad_certificate, unsupported_certificate,
// certificate_revoked, certificate_expired, certificate_unknown,
// unknown_ca).
func certificateAlert(a uint8) bool {
	return (a >= 42 && a <= 46) || a == 48
}

func certName(c *x509.Certificate) string {
	if c == nil || c.Subject.CommonName == "" {
		return "-"
	}
	return c.Subject.CommonName
}
