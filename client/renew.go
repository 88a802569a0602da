package client

// Renewal inside the session (ARCHITECTURE.md, "Renewal"; docs/renewal.md).
//
// When the gateway offers it (tunnel.CapRenew in the config answer), the
// laptop renews at renew_at of its certificate's lifetime, with jitter:
// routineRenew makes a new key where the current one lives (KeyMaker),
// sends a request signed by it and bound to this TLS session, and waits
// for the answer (onRenewed, from readStream). A new certificate is
// checked (for the new key, the same subject), written into the profile
// with its key and the CA bundle (profile.go, one atomic write), and used
// at once: the gateway has already moved the live session to it, and
// every later connection presents it. The pair it replaced is kept in the
// state directory until a session with the new one succeeds, and is tried
// once if the new one is refused. A refused renewal is retried later; the
// session goes on.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	crand "crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/hwkey"
	"github.com/sallyport/sallyport/tunnel"
)

// KeyMaker makes the device's next key where its current one lives: a
// software key in memory (written into the profile as key_pem), a TPM key
// in the same TPM, a token key in the same token. It is how a renewal gets
// its new key; keyMakerFor picks one for the profile.
type KeyMaker interface {
	// NewKey makes a new key of the same kind as the current one.
	NewKey() (*NextKey, error)
}

// NextKey is a new device key and how the profile refers to it.
type NextKey struct {
	// Signer is the key (its private half may stay in hardware).
	Signer crypto.Signer
	// Settings are the [tls] keys of the profile that name it, written
	// with the certificate: {"key_pem": PEM} for a software key,
	// {"key_tpm": file} for a TPM key, {"key_pkcs11": URI} for a token.
	Settings map[string]string
	// Discard removes a key that will never be used (the renewal failed);
	// nil when there is nothing to remove.
	Discard func()
	// Attestation, optional, is the hardware's evidence that the key was
	// made in it, sent with the request (tunnel.RenewRequest.Attestation).
	Attestation []byte
}

// softKeyMaker makes software keys of the current key's type.
type softKeyMaker struct{ like crypto.PublicKey }

// NewKey makes a key like the current one: ECDSA on its curve, Ed25519,
// or RSA of its size (at least 3072 bits).
func (m softKeyMaker) NewKey() (*NextKey, error) {
	var k crypto.Signer
	var err error
	switch p := m.like.(type) {
	case *ecdsa.PublicKey:
		curve := elliptic.P256()
		if p.Curve == elliptic.P384() {
			curve = elliptic.P384()
		}
		k, err = ecdsa.GenerateKey(curve, crand.Reader)
	case ed25519.PublicKey:
		_, k, err = ed25519.GenerateKey(crand.Reader)
	case *rsa.PublicKey:
		k, err = rsa.GenerateKey(crand.Reader, max(3072, p.N.BitLen()))
	default:
		k, err = ecdsa.GenerateKey(elliptic.P256(), crand.Reader)
	}
	if err != nil {
		return nil, fmt.Errorf("make a new key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode the new key: %w", err)
	}
	return &NextKey{Signer: k, Settings: map[string]string{"key_pem": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))}}, nil
}

// keyMakerFor says how this profile renews, or why it cannot: the
// certificate must be inline (cert_pem, as `pki bundle` writes it) and the
// key inline (key_pem); a key in hardware renews in the same hardware
// through hardwareKeyMaker (hwrenew.go).
func keyMakerFor(cfg *Config, mat *material) (KeyMaker, string) {
	switch {
	case cfg.Path == "":
		return nil, "the profile was not loaded from a file"
	case cfg.TLS.CertPEM == "":
		return nil, "the certificate is a file (tls.cert); renewal writes it into the profile, so it must be inline (tls.cert_pem, as `sallyport pki bundle` writes it)"
	case mat.keyKind != hwkey.KindFile:
		if hardwareKeyMaker != nil {
			return hardwareKeyMaker(cfg, mat)
		}
		return nil, "the device key is in " + string(mat.keyKind) + " hardware, and making its next key there is not supported yet"
	case cfg.TLS.KeyPEM == "":
		return nil, "the key is a file (tls.key); renewal writes the new key into the profile, so it must be inline (tls.key_pem, as `sallyport pki bundle` writes it)"
	}
	return softKeyMaker{like: mat.leaf.PublicKey}, ""
}

// hardwareKeyMaker makes the next key of a TPM or token device key in the
// same hardware (set by hwrenew.go).
var hardwareKeyMaker func(cfg *Config, mat *material) (KeyMaker, string)

// renewalJitter is the spread around renew_at, as a fraction of the
// certificate's lifetime (either way).
const renewalJitter = 0.05

// renewTimeout bounds the wait for the gateway's answer.
const renewTimeout = 30 * time.Second

// renewAt is when a certificate valid from nb to na renews, at fraction
// at of its lifetime plus or minus renewalJitter of it.
func renewAt(nb, na time.Time, at float64) time.Time {
	life := na.Sub(nb)
	j := (rand.Float64()*2 - 1) * renewalJitter
	return nb.Add(time.Duration((at + j) * float64(life)))
}

// routineRenew renews the certificate of this session when it is due,
// and again for each new certificate, until ctx ends (the session does).
func (c *Client) routineRenew(ctx context.Context, cn *conn, at float64, km KeyMaker) {
	retry := time.Time{}
	for {
		mat := c.material()
		due := renewAt(mat.leaf.NotBefore, mat.leaf.NotAfter, at)
		if !retry.IsZero() {
			due = retry
		}
		if now := time.Now(); due.Before(now) {
			// Due already (a laptop back from sleep, a reconnect storm):
			// soon, spread over a few seconds.
			due = now.Add(rand.N(min(mat.leaf.NotAfter.Sub(mat.leaf.NotBefore)/50, 10*time.Second) + time.Millisecond))
		}
		c.mu.Lock()
		c.renewDue = due
		c.mu.Unlock()
		t := time.NewTimer(time.Until(due))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait, err := c.renewOnce(ctx, cn, km)
		if ctx.Err() != nil {
			return
		}
		retry = time.Time{}
		if err != nil {
			// Try again later, well before the certificate expires.
			left := time.Until(mat.leaf.NotAfter)
			if wait <= 0 {
				wait = min(max(left/10, 5*time.Second), 10*time.Minute)
			}
			retry = time.Now().Add(wait)
			c.mu.Lock()
			c.renewError = err.Error()
			c.mu.Unlock()
			c.log.Warn("certificate renewal failed; trying again later", "err", err, "retry_at", retry.Format(time.RFC3339),
				"not_after", mat.leaf.NotAfter.Format(time.RFC3339))
		}
	}
}

// renewOnce makes a key, asks for a certificate for it and takes it.
// wait, with an error, is how long the gateway asked us to wait.
func (c *Client) renewOnce(ctx context.Context, cn *conn, km KeyMaker) (wait time.Duration, err error) {
	old := c.material()
	next, err := km.NewKey()
	if err != nil {
		return 0, err
	}
	used := false
	defer func() {
		if !used && next.Discard != nil {
			next.Discard()
		}
	}()
	binding, err := pki.RenewalBinding(cn.tlsState())
	if err != nil {
		return 0, err
	}
	csr, err := pki.NewRenewalRequest(next.Signer, pki.IdentityOf(old.leaf).Device, binding)
	if err != nil {
		return 0, err
	}
	b, err := tunnel.EncodeRenewRequest(tunnel.RenewRequest{CSR: csr, Attestation: next.Attestation})
	if err != nil {
		return 0, err
	}
	// A stale answer from an earlier request that timed out is dropped.
	select {
	case <-cn.renewed:
	default:
	}
	if err := cn.w.WriteControl(tunnel.FrameRenew, b); err != nil {
		cn.drop(err)
		return 0, fmt.Errorf("send renewal request: %w", err)
	}
	t := time.NewTimer(renewTimeout)
	defer t.Stop()
	var r tunnel.RenewReply
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-t.C:
		return 0, fmt.Errorf("no answer to the renewal request within %v", renewTimeout)
	case r = <-cn.renewed:
	}
	if r.Reason != "" {
		return time.Duration(r.RetryAfter) * time.Second, fmt.Errorf("the gateway refused the renewal: %s", r.Reason)
	}
	mat, bundle, err := c.checkRenewed(old, next, r, cn.tlsState())
	if err != nil {
		return 0, err
	}
	used = true
	c.takeRenewed(old, mat, next, bundle)
	return 0, nil
}

// onRenewed hands the gateway's answer to the waiting renewal. An answer
// nobody asked for is a protocol error.
func (c *Client) onRenewed(cn *conn, payload []byte) error {
	r, err := tunnel.DecodeRenewReply(payload)
	if err != nil {
		return fmt.Errorf("renewal answer from gateway: %w", err)
	}
	if cn.renewed == nil {
		return fmt.Errorf("%w: renewal answer from a gateway we did not negotiate renewal with", tunnel.ErrProtocol)
	}
	select {
	case cn.renewed <- r:
	default: // one is waiting already; this one answers nothing we asked
	}
	return nil
}

// checkRenewed checks the gateway's answer: a chain whose leaf is for the
// new key, has the subject of the certificate it replaces, is valid now
// and is signed by the next certificate of the chain. It returns the new
// material and the CA bundle to keep (nil: keep the current one).
func (c *Client) checkRenewed(old *material, next *NextKey, r tunnel.RenewReply, cs tls.ConnectionState) (*material, []*x509.Certificate, error) {
	var chain []*x509.Certificate
	for i, der := range r.Certs {
		x, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, fmt.Errorf("renewed certificate %d does not parse: %w", i, err)
		}
		chain = append(chain, x)
	}
	leaf := chain[0]
	now := time.Now()
	switch {
	case !pki.SamePublicKey(leaf.PublicKey, next.Signer.Public()):
		return nil, nil, errors.New("the renewed certificate is not for the new key")
	case !bytes.Equal(leaf.RawSubject, old.leaf.RawSubject):
		return nil, nil, fmt.Errorf("the renewed certificate is for %q, not this device %q", pki.NameString(leaf.Subject), pki.NameString(old.leaf.Subject))
	case now.After(leaf.NotAfter) || !leaf.NotAfter.After(old.leaf.NotBefore):
		return nil, nil, fmt.Errorf("the renewed certificate is not valid now (until %s)", leaf.NotAfter.Format(time.RFC3339))
	case leaf.IsCA || !slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth):
		// What no gateway takes (ca-leaf, bad-eku) is not written over a
		// pair that works.
		return nil, nil, errors.New("the renewed certificate is not a device certificate (a CA, or no clientAuth usage)")
	case len(chain) > 1 && leaf.CheckSignatureFrom(chain[1]) != nil:
		return nil, nil, errors.New("the renewed certificate is not signed by the issuer sent with it")
	}
	mat := *old
	mat.cert = tls.Certificate{Certificate: r.Certs, PrivateKey: next.Signer, Leaf: leaf}
	mat.leaf = leaf
	mat.keySet = maps(next.Settings)
	mat.closer = nil
	if c, ok := next.Signer.(interface{ Close() error }); ok {
		mat.closer = c
	}
	if w, ok := next.Signer.(interface{ Where() string }); ok {
		mat.keyAt = w.Where() // the new key file or token object
	}
	bundle, why := acceptBundle(old.cas, r.CAs, cs)
	if why != "" {
		c.log.Warn("the CA bundle sent with the renewal is not taken; the current one stays", "why", why)
		bundle = nil
	}
	if bundle != nil {
		mat.cas = bundle
		mat.roots = pki.NewPool(bundle)
	}
	return &mat, bundle, nil
}

// acceptBundle decides whether the laptop takes the CA bundle a gateway
// sent with a renewal as its trust for gateways. A gateway that could
// push any CA could make the laptop trust anything from then on, so each
// CA of the new bundle must be one the laptop trusts already, or one that
// a CA it trusts (or one of the bundle's CAs vouched for that way) has
// certified as a CA: a valid chain to a trusted CA now, in which every
// issuer's path length allows one more CA below it, so the online issuer
// (path length 0, its key on every gateway) and an intermediate certify
// none. A new root counts as certified when the bundle carries its
// cross-certificate (same subject and key) certified that way: what
// `sallyport pki rotate` makes. Only the holder of a root key, the admin,
// introduces a CA. And the new bundle must still verify the gateway of
// this session, or the laptop would lock itself out. It returns nil and
// "" when nothing changes.
func acceptBundle(cur []*x509.Certificate, ders [][]byte, cs tls.ConnectionState) ([]*x509.Certificate, string) {
	if len(ders) == 0 {
		return nil, ""
	}
	var next []*x509.Certificate
	for i, der := range ders {
		x, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Sprintf("CA %d does not parse: %v", i, err)
		}
		if !x.IsCA || !x.BasicConstraintsValid {
			return nil, fmt.Sprintf("%q is not a CA certificate", x.Subject.CommonName)
		}
		next = append(next, x)
	}
	if slices.EqualFunc(cur, next, (*x509.Certificate).Equal) {
		return nil, ""
	}
	trusted := slices.Clone(cur)
	var pending []*x509.Certificate
	for _, x := range next {
		if !slices.ContainsFunc(cur, x.Equal) {
			pending = append(pending, x)
		}
	}
	// A CA vouched for may vouch for the next (a new root, then the
	// intermediate it signed): repeat until nothing more is certified.
	for progress := true; progress && len(pending) > 0; {
		progress = false
		for i := 0; i < len(pending); {
			if !certifiedCA(pending[i], trusted, next) {
				i++
				continue
			}
			trusted = append(trusted, pending[i])
			pending = slices.Delete(pending, i, i+1)
			progress = true
		}
	}
	if len(pending) > 0 {
		return nil, fmt.Sprintf("CA %q is neither trusted now nor vouched for (certified as a CA) by one this laptop trusts; a new root needs its cross-certificate from `sallyport pki rotate`", pending[0].Subject.CommonName)
	}
	if len(cs.PeerCertificates) > 0 {
		inter := x509.NewCertPool()
		for _, x := range cs.PeerCertificates[1:] {
			inter.AddCert(x)
		}
		if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pki.NewPool(next), Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return nil, fmt.Sprintf("it does not verify this gateway's certificate (%v)", err)
		}
	}
	return next, ""
}

// certifiedCA reports whether x is certified as a CA by one of trusted:
// it (or, for a self-signed x, a certificate of bundle with its subject
// and key: a cross-certificate) has a chain to trusted that is valid now,
// through certificates of bundle, and no issuer in it has a path length
// that forbids a CA below it.
func certifiedCA(x *x509.Certificate, trusted, bundle []*x509.Certificate) bool {
	cands := []*x509.Certificate{x}
	if bytes.Equal(x.RawIssuer, x.RawSubject) {
		for _, c := range bundle {
			if c != x && !bytes.Equal(c.RawIssuer, c.RawSubject) && bytes.Equal(c.RawSubject, x.RawSubject) && pki.SamePublicKey(c.PublicKey, x.PublicKey) {
				cands = append(cands, c)
			}
		}
	}
	opts := x509.VerifyOptions{Roots: pki.NewPool(trusted), Intermediates: pki.NewPool(bundle), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}
	for _, c := range cands {
		chains, err := c.Verify(opts)
		if err != nil {
			continue
		}
		for _, ch := range chains {
			if allowsCABelow(ch) {
				return true
			}
		}
	}
	return false
}

// allowsCABelow reports whether every issuer of chain (chain[0] a CA,
// then its issuers up to a trust anchor) may have as many CAs below it
// as it has in the chain: the issuer at i has i.
func allowsCABelow(chain []*x509.Certificate) bool {
	for i, c := range chain[1:] {
		if c.BasicConstraintsValid && c.MaxPathLen >= 0 && i+1 > c.MaxPathLen {
			return false
		}
	}
	return true
}

// takeRenewed makes mat the device's identity: written into the profile,
// the pair it replaces kept aside until a session with the new one
// succeeds, in use for every later connection.
func (c *Client) takeRenewed(old, mat *material, next *NextKey, bundle []*x509.Certificate) {
	oldID, id := pki.IdentityOf(old.leaf), pki.IdentityOf(mat.leaf)
	set := maps(next.Settings)
	set["cert_pem"] = pemChain(mat.cert.Certificate)
	caNote := ""
	if bundle != nil {
		if c.cfg.TLS.CAPEM != "" {
			set["ca_pem"] = pemCerts(bundle)
		} else {
			caNote = "tls.ca is a file: install the new CA bundle there (it was sent with this renewal, but a shared file is not rewritten)"
		}
	}
	if err := c.savePrevious(old); err != nil {
		c.log.Warn("the previous certificate is not kept aside", "err", err)
	}
	saved := true
	if err := writeProfile(c.cfg.Path, set); err != nil {
		saved = false
		c.log.Error("renewed certificate not written into the profile; it is used until the client stops, then the profile's certificate again", "err", err)
	}
	if !c.prev.CompareAndSwap(nil, old) {
		// A second renewal in one session: the pair kept aside is still
		// the one that last connected (as in previousFile); old never
		// made a handshake, and the session it renewed in is established.
		releaseKey(old, c.prev.Load())
	}
	c.matp.Store(mat)
	c.mu.Lock()
	c.renewals++
	c.renewedAt, c.renewError = time.Now(), ""
	c.mu.Unlock()
	c.log.Info("certificate renewed", "old_serial", oldID.Serial, "new_serial", id.Serial, "not_after", mat.leaf.NotAfter.Format(time.RFC3339),
		"lineage", id.Lineage, "saved", saved, "ca_bundle_updated", bundle != nil && caNote == "")
	if caNote != "" {
		c.log.Warn(caNote)
	}
}

func maps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+2)
	for k, v := range m {
		out[k] = v
	}
	return out
}

func pemChain(ders [][]byte) string {
	var b strings.Builder
	for _, d := range ders {
		b.Write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d}))
	}
	return b.String()
}

func pemCerts(certs []*x509.Certificate) string {
	ders := make([][]byte, len(certs))
	for i, c := range certs {
		ders[i] = c.Raw
	}
	return pemChain(ders)
}

// previousFile keeps the pair a renewal replaced, beside the profile's
// memory in the state directory, until a session with the new pair
// succeeds.
func previousFile(cfg *Config) string {
	return strings.TrimSuffix(memoryFile(cfg), ".json") + ".previous.json"
}

// previousPair is the content of previousFile.
type previousPair struct {
	CertPEM string            `json:"cert_pem"`
	Key     map[string]string `json:"key"` // [tls] settings naming the key
}

// savePrevious keeps old aside (mode 0600: it may hold a key).
func (c *Client) savePrevious(old *material) error {
	p := previousPair{CertPEM: pemChain(old.cert.Certificate), Key: maps(old.keySet)}
	if c.prev.Load() != nil {
		// A second renewal in one session: the pair kept aside is the one
		// that last connected, not the one never used.
		return nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	path := previousFile(c.cfg)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(path, b, 0o600)
}

// loadPrevious loads the pair kept aside, if it is still valid.
func loadPrevious(cfg *Config, cur *material) *material {
	b, err := os.ReadFile(previousFile(cfg))
	if err != nil {
		return nil
	}
	var p previousPair
	if json.Unmarshal(b, &p) != nil || p.Key["key_pem"] == "" {
		return nil // hardware keys are not reopened here
	}
	cert, err := tls.X509KeyPair([]byte(p.CertPEM), []byte(p.Key["key_pem"]))
	if err != nil || time.Now().After(cert.Leaf.NotAfter) || !bytes.Equal(cert.Leaf.RawSubject, cur.leaf.RawSubject) {
		return nil
	}
	m := *cur
	m.cert, m.leaf, m.closer, m.keySet = cert, cert.Leaf, nil, maps(p.Key)
	return &m
}

// dropPrevious forgets the pair kept aside: a session with the current
// one succeeded.
func (c *Client) dropPrevious() {
	prev := c.prev.Swap(nil)
	if prev == nil {
		return
	}
	releaseKey(prev, c.material())
	if err := os.Remove(previousFile(c.cfg)); err != nil && !errors.Is(err, os.ErrNotExist) {
		c.log.Warn("the previous certificate kept aside could not be removed", "file", previousFile(c.cfg), "err", err)
	}
}

// certRefused reports whether a session failed because the gateway
// refused the device's certificate (as opposed to the network, the
// gateway's certificate, or a passing refusal).
func certRefused(err error) bool {
	switch classify(err).Code {
	case codeBadCert, string(tunnel.ReasonRevoked), string(tunnel.ReasonExpired), string(tunnel.ReasonUnknownCA), string(tunnel.ReasonNotAllowlisted), string(tunnel.ReasonNoPolicy),
		string(tunnel.ReasonCALeaf), string(tunnel.ReasonBadEKU), string(tunnel.ReasonHardwareKey):
		return true
	}
	return false
}

// releaseKey closes m's hardware key (the token session or TPM handle
// behind it) unless a material in keep still uses it. A key is only used
// in a handshake, so a replaced identity's key is not needed once the
// client has moved on from it.
func releaseKey(m *material, keep ...*material) {
	if m == nil || m.closer == nil {
		return
	}
	for _, k := range keep {
		if k != nil && k.closer == m.closer {
			return
		}
	}
	_ = m.closer.Close()
}
