// Package renew is the gateway's online issuer (ARCHITECTURE.md,
// "Renewal"): it re-issues the identity of a device certificate the gateway
// has just verified, for the new key of a renewal request, and keeps the
// record of what it issued. It is the only signing code the gateway links,
// and it can sign nothing else: Reissue takes the verified chain of the
// certificate to renew and a public key, and copies subject and subject
// alternative names from the certificate (the lineage from it and its
// chain), never from the request. It imports only pki; the
// CA (pki/ca) stays out of the gateway and the laptop.
package renew

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"time"

	"github.com/sallyport/sallyport/pki"
)

// Backdate is how far before "now" a renewed certificate starts, for the
// clock skew between gateway and laptop (the CA uses the same), at most a
// tenth of its lifetime: the laptop renews at a fraction of the lifetime
// counted from the start, which a long backdate would pull forward.
const Backdate = 5 * time.Minute

// MinLifetime is the shortest lifetime the issuer gives a certificate.
const MinLifetime = time.Minute

// oidSAN is the subject alternative name extension (2.5.29.17).
var oidSAN = asn1.ObjectIdentifier{2, 5, 29, 17}

// Issuer is an online issuing CA and its key.
type Issuer struct {
	cert  *x509.Certificate
	chain []*x509.Certificate // what follows a renewed leaf: cert, then the rest of its file
	key   crypto.Signer
}

// Load reads an issuer's certificate file (the issuer first, then any
// certificates between it and the root) and its key, refusing a key file
// others may read exactly like the gateway key (pki.CheckKeyPerm, so a
// systemd credential works), a key that does not match, or a certificate
// that is not an online issuer (CheckIssuer).
func Load(certPath, keyPath string) (*Issuer, error) {
	if err := pki.CheckKeyPerm(keyPath); err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	certs, err := pki.LoadCertificates(certPath)
	if err != nil {
		return nil, fmt.Errorf("issuer certificate: %w", err)
	}
	data, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	key, err := pki.ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("issuer key %s: %w", keyPath, err)
	}
	is, err := New(certs, key)
	if err != nil {
		return nil, fmt.Errorf("issuer %s: %w", certPath, err)
	}
	return is, nil
}

// New makes an Issuer of chain (the issuer's certificate first) and its key.
func New(chain []*x509.Certificate, key crypto.Signer) (*Issuer, error) {
	if len(chain) == 0 || chain[0] == nil {
		return nil, errors.New("no issuer certificate")
	}
	if err := CheckIssuer(chain[0]); err != nil {
		return nil, err
	}
	if !pki.SamePublicKey(key.Public(), chain[0].PublicKey) {
		return nil, errors.New("the key does not match the issuer certificate")
	}
	return &Issuer{cert: chain[0], chain: slices.Clone(chain), key: key}, nil
}

// CheckIssuer applies the rules of an online issuer to its certificate: a
// CA (basic constraints present) with path length 0, so it can certify no
// other CA; allowed to sign certificates; and clientAuth as its only
// extended key usage, so nothing it signs is accepted as a gateway or for
// any purpose but a device's.
func CheckIssuer(c *x509.Certificate) error {
	name := c.Subject.CommonName
	switch {
	case !c.BasicConstraintsValid || !c.IsCA:
		return fmt.Errorf("certificate %q is not a CA certificate", name)
	case c.MaxPathLen != 0 || !c.MaxPathLenZero:
		return fmt.Errorf("issuer %q has no path length 0: an online issuer must not be able to certify other CAs (make one with: sallyport pki issuer)", name)
	case c.KeyUsage&x509.KeyUsageCertSign == 0:
		return fmt.Errorf("issuer %q may not sign certificates (no keyCertSign usage)", name)
	case len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || len(c.UnknownExtKeyUsage) > 0:
		return fmt.Errorf("issuer %q must list clientAuth as its only extended key usage (make one with: sallyport pki issuer)", name)
	}
	return nil
}

// Cert is the issuer's certificate.
func (is *Issuer) Cert() *x509.Certificate { return is.cert }

// Chain is what follows a renewed leaf in the chain a device presents: the
// issuer, then the rest of its file.
func (is *Issuer) Chain() []*x509.Certificate { return slices.Clone(is.chain) }

// Reissue signs a certificate for pub with the identity of chain[0], a
// device certificate the caller has verified in full just now; chain is
// that verified chain, leaf first, its trust anchor last. Everything but
// the key comes from the leaf, its chain or the issuer: the subject (byte
// for byte: CN, groups, user), the subject alternative names (the
// extension byte for byte), the lineage (NextLineage), clientAuth only,
// not a CA. The validity starts Backdate (at most a tenth of lifetime)
// before now and ends lifetime after now, cut at the issuer's own expiry.
// The caller has checked pub (pki.CheckRenewalKey) and that it is not the
// leaf's own.
func (is *Issuer) Reissue(chain []*x509.Certificate, pub crypto.PublicKey, now time.Time, lifetime time.Duration) (*x509.Certificate, error) {
	return is.reissue(chain, pub, now, lifetime, false)
}

// NextLineage is the lineage of a certificate renewed from chain (the
// verified chain of the certificate in use, leaf first, trust anchor
// last). It is the leaf's own lineage when an online issuer signed the
// leaf (CheckIssuer: a renewal), and the leaf itself otherwise (its
// enrollment): a lineage extension that any other CA signed, copied from
// a request by a careless CA or forged, would let the device's renewals
// escape the revocation of its enrollment, so it is not carried. Every CA
// of chain below its anchor joins the lineage's CAs (once), so revoking
// any CA that ever signed a certificate of the lineage still cuts it when
// another issuer has renewed it since.
func NextLineage(chain []*x509.Certificate) (pki.Lineage, error) {
	if len(chain) == 0 || chain[0] == nil {
		return pki.Lineage{}, errors.New("no certificate")
	}
	leaf := chain[0]
	l := pki.Lineage{Serial: leaf.SerialNumber, RawIssuer: leaf.RawIssuer}
	if len(chain) > 1 && CheckIssuer(chain[1]) == nil {
		got, renewed, err := pki.LineageOf(leaf)
		if err != nil {
			return pki.Lineage{}, err
		}
		if renewed {
			l = got
		}
	}
	cas := slices.Clone(l.CAs)
	for i := 1; i < len(chain)-1; i++ {
		s := chain[i].SerialNumber
		if !slices.ContainsFunc(cas, func(c *big.Int) bool { return c.Cmp(s) == 0 }) {
			cas = append(cas, s)
		}
	}
	if len(cas) > pki.MaxLineageCAs {
		return pki.Lineage{}, fmt.Errorf("the lineage has been signed by %d CAs, more than %d: enroll the device again", len(cas), pki.MaxLineageCAs)
	}
	l.CAs = cas
	return l, nil
}

// ReissueAttested is Reissue for a certificate whose TPM origin was
// attested (pki.KeyOriginAttested) and a new key the caller has verified
// to be certified by leaf's attestation key (pki/hwkey
// VerifyRenewalAttestation): the renewed certificate keeps the attested
// origin and the attestation key, copied from leaf. Vouched-for origins
// are never carried: nothing proves where the new key was made.
func (is *Issuer) ReissueAttested(chain []*x509.Certificate, pub crypto.PublicKey, now time.Time, lifetime time.Duration) (*x509.Certificate, error) {
	if len(chain) == 0 || chain[0] == nil || !pki.KeyOriginAttested(chain[0]) || pki.AttestationKeyOf(chain[0]) == nil {
		return nil, errors.New("renew: the certificate's key origin is not attested")
	}
	return is.reissue(chain, pub, now, lifetime, true)
}

func (is *Issuer) reissue(chain []*x509.Certificate, pub crypto.PublicKey, now time.Time, lifetime time.Duration, attested bool) (*x509.Certificate, error) {
	if len(chain) == 0 || chain[0] == nil || chain[0].IsCA {
		return nil, errors.New("renew: only a device certificate can be renewed")
	}
	leaf := chain[0]
	if err := pki.CheckRenewalKey(pub); err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	if lifetime < MinLifetime {
		return nil, fmt.Errorf("renew: lifetime %v is shorter than %v", lifetime, MinLifetime)
	}
	l, err := NextLineage(chain)
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	ext, err := pki.LineageExtension(l)
	if err != nil {
		return nil, fmt.Errorf("renew: %w", err)
	}
	nb := now.Add(-min(Backdate, lifetime/10))
	if nb.Before(is.cert.NotBefore) {
		nb = is.cert.NotBefore
	}
	na := now.Add(lifetime)
	if na.After(is.cert.NotAfter) {
		na = is.cert.NotAfter
	}
	if !na.After(now) {
		return nil, fmt.Errorf("renew: the issuer %q expired at %s", is.cert.Subject.CommonName, is.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	serial, err := pki.NewSerial(nil)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		RawSubject:            leaf.RawSubject,
		NotBefore:             nb,
		NotAfter:              na,
		BasicConstraintsValid: true,
		IsCA:                  false,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		ExtraExtensions:       []pkix.Extension{ext},
	}
	if _, ok := pub.(*rsa.PublicKey); ok {
		tmpl.KeyUsage |= x509.KeyUsageKeyEncipherment
	}
	for _, e := range leaf.Extensions {
		if e.Id.Equal(oidSAN) || (attested && e.Id.Equal(pki.OIDAttestationKey)) {
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, e)
		}
	}
	if attested {
		tmpl.Policies = []x509.OID{pki.KeyOriginAttestedPolicy()}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, is.cert, pub, is.key)
	if err != nil {
		return nil, fmt.Errorf("renew: sign: %w", err)
	}
	return x509.ParseCertificate(der)
}
