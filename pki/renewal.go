package pki

// The renewal request (ARCHITECTURE.md, "Renewal"): a PKCS#10 CSR signed
// by the device's new key, carrying one extension request, the binding:
// the TLS exporter value of the session it is sent over. The gateway
// checks the signature (the device holds the new key) and that the binding
// is its own session's exporter value, so a request recorded from one
// session is refused on any other. Nothing else in the request is used:
// the gateway takes the public key and copies everything else from the
// certificate it has just verified.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
)

// OIDRenewalBinding is the CSR extension holding the session binding (an
// OCTET STRING of RenewalBindingLen bytes). It only ever appears in a
// request, never in a certificate.
var OIDRenewalBinding = append(append(asn1.ObjectIdentifier{}, OIDArc...), 2)

// RenewalExporterLabel is the TLS exporter label (RFC 8446 7.5) of the
// binding; both ends derive RenewalBindingLen bytes with no context.
const RenewalExporterLabel = "EXPORTER-sallyport-renew"

// RenewalBindingLen is the length of the binding.
const RenewalBindingLen = 32

// MaxRenewalRequest bounds a renewal request's DER (an RSA-8192 CSR is
// about 2.5 KiB).
const MaxRenewalRequest = 8 << 10

// RenewalBinding derives the session's binding from its TLS state.
func RenewalBinding(cs tls.ConnectionState) ([]byte, error) {
	b, err := cs.ExportKeyingMaterial(RenewalExporterLabel, nil, RenewalBindingLen)
	if err != nil {
		return nil, fmt.Errorf("renewal binding: %w", err)
	}
	return b, nil
}

// NewRenewalRequest makes the DER CSR for key, bound to binding. device
// only labels the request for humans (its CN); the gateway ignores it.
func NewRenewalRequest(key crypto.Signer, device string, binding []byte) ([]byte, error) {
	if len(binding) != RenewalBindingLen {
		return nil, fmt.Errorf("renewal request: binding of %d bytes, want %d", len(binding), RenewalBindingLen)
	}
	if err := CheckRenewalKey(key.Public()); err != nil {
		return nil, err
	}
	val, err := asn1.Marshal(binding)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.CertificateRequest{
		Subject:         pkix.Name{CommonName: device},
		ExtraExtensions: []pkix.Extension{{Id: OIDRenewalBinding, Value: val}},
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return nil, fmt.Errorf("renewal request: %w", err)
	}
	return der, nil
}

// ErrRenewalBinding means a request is not bound to the session it came
// over (replayed from another session, or made for none).
var ErrRenewalBinding = errors.New("renewal request is not bound to this session")

// CheckRenewalRequest parses a renewal request and checks that its
// signature verifies with its own key (the device holds the new key), that
// it carries exactly one binding equal to binding (this session's), and
// that the key is one a device certificate may have. It returns the
// request; callers must use nothing of it but PublicKey.
func CheckRenewalRequest(der, binding []byte) (*x509.CertificateRequest, error) {
	if len(der) == 0 || len(der) > MaxRenewalRequest {
		return nil, fmt.Errorf("renewal request of %d bytes (want 1..%d)", len(der), MaxRenewalRequest)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("renewal request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("renewal request: signature: %w", err)
	}
	var got []byte
	n := 0
	for _, e := range csr.Extensions {
		if !e.Id.Equal(OIDRenewalBinding) {
			continue
		}
		n++
		var v []byte
		if rest, err := asn1.Unmarshal(e.Value, &v); err != nil || len(rest) > 0 {
			return nil, fmt.Errorf("%w: binding does not decode", ErrRenewalBinding)
		}
		got = v
	}
	if n != 1 || len(binding) != RenewalBindingLen || len(got) != RenewalBindingLen || subtle.ConstantTimeCompare(got, binding) != 1 {
		return nil, ErrRenewalBinding
	}
	if err := CheckRenewalKey(csr.PublicKey); err != nil {
		return nil, err
	}
	return csr, nil
}

// CheckRenewalKey accepts the public keys a device certificate may carry:
// ECDSA P-256 or P-384, Ed25519, RSA of 2048 to 8192 bits.
func CheckRenewalKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() || k.Curve == elliptic.P384() {
			return nil
		}
		return fmt.Errorf("ECDSA key on curve %s is not accepted (P-256 or P-384)", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 8192 {
			return fmt.Errorf("RSA key of %d bits is not accepted (2048 to 8192)", n)
		}
		return nil
	}
	return fmt.Errorf("key type %T is not accepted for a device", pub)
}

// SamePublicKey reports whether a and b are the same public key.
func SamePublicKey(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	if ok {
		return ae.Equal(b)
	}
	da, err1 := x509.MarshalPKIXPublicKey(a)
	db, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(da, db)
}
