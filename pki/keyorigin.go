package pki

import (
	"crypto/x509"
	"encoding/asn1"
	"fmt"
)

// Where a device key lives, as the issuing CA recorded it in the device
// certificate. The laptop never says this about itself: the admin vouches
// for it when signing the device's CSR ("pki sign --key-origin tpm"),
// having enrolled the device so that the key was made in the hardware
// (the admin or the fleet tooling ran "pki csr --tpm" on it). The CA
// records it as a certificate policy (RFC 5280 4.2.1.4: under which
// policy the issuer issued this certificate), so a gateway policy can
// demand hardware keys from the certificate alone.
//
// The OIDs sit under sallyport's arc (OIDArc), sub-arc 3:
//
//	OIDArc.3.1  key made in a TPM 2.0, vouched for by the issuer
//	OIDArc.3.2  key made in a PKCS#11 token, vouched for by the issuer
//	OIDArc.3.3  key made in a TPM 2.0, attested: the issuer verified the
//	            TPM's EK certificate, a TPM2_Certify of the key by an
//	            attestation key, and that key's binding to the EK
//	            (credential activation); pki/hwkey, "pki sign
//	            --require-hardware"
//
// An attested certificate also carries the attestation key's public area
// (OIDAttestationKey, non-critical), so a later check can ask that TPM
// to certify a new key with the same AK.

// Key origins.
const (
	KeyOriginTPM    = "tpm"    // made inside the device's TPM 2.0; cannot leave it
	KeyOriginPKCS11 = "pkcs11" // made inside a PKCS#11 token (smart card, security key)
)

var (
	oidKeyInTPM      = arcOID(3, 1)
	oidKeyInToken    = arcOID(3, 2)
	oidKeyInTPMProof = arcOID(3, 3)
)

// OIDAttestationKey is the extension holding the TPM2B_PUBLIC of the
// attestation key an attested certificate's key was certified by.
var OIDAttestationKey = append(append(asn1.ObjectIdentifier{}, OIDArc...), 4)

// KeyOriginAttestedPolicy is the policy OID of a TPM key the issuer
// verified by attestation.
func KeyOriginAttestedPolicy() x509.OID { return oidKeyInTPMProof }

// KeyOriginAttested reports whether the issuer verified the key's origin
// by TPM attestation (not only vouched for it).
func KeyOriginAttested(cert *x509.Certificate) bool {
	if cert == nil || KeyOriginOf(cert) != KeyOriginTPM {
		return false
	}
	for _, p := range cert.Policies {
		if p.Equal(oidKeyInTPMProof) {
			return true
		}
	}
	return false
}

func arcOID(sub ...int) x509.OID {
	arcs := make([]uint64, 0, len(OIDArc)+len(sub))
	for _, a := range append(append([]int{}, OIDArc...), sub...) {
		arcs = append(arcs, uint64(a))
	}
	o, err := x509.OIDFromInts(arcs)
	if err != nil {
		panic(err)
	}
	return o
}

// KeyOriginPolicy returns the certificate policy OID that records origin
// ("tpm" or "pkcs11").
func KeyOriginPolicy(origin string) (x509.OID, error) {
	switch origin {
	case KeyOriginTPM:
		return oidKeyInTPM, nil
	case KeyOriginPKCS11:
		return oidKeyInToken, nil
	}
	return x509.OID{}, fmt.Errorf("key origin %q: want tpm or pkcs11", origin)
}

// KeyOriginOf returns where the certificate's issuer says the key lives:
// "tpm", "pkcs11", or "" when it says nothing (a key file, or unknown). A
// certificate that names two origins says nothing trustworthy: "".
func KeyOriginOf(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	origin := ""
	for _, p := range cert.Policies {
		var o string
		switch {
		case p.Equal(oidKeyInTPM), p.Equal(oidKeyInTPMProof):
			o = KeyOriginTPM
		case p.Equal(oidKeyInToken):
			o = KeyOriginPKCS11
		default:
			continue
		}
		if origin != "" && origin != o {
			return ""
		}
		origin = o
	}
	return origin
}

// AttestationKeyOf returns the attestation key's TPM2B_PUBLIC an attested
// certificate carries (OIDAttestationKey), or nil.
func AttestationKeyOf(cert *x509.Certificate) []byte {
	if cert == nil {
		return nil
	}
	for _, e := range cert.Extensions {
		if !e.Id.Equal(OIDAttestationKey) {
			continue
		}
		var b []byte
		if rest, err := asn1.Unmarshal(e.Value, &b); err != nil || len(rest) != 0 || len(b) == 0 {
			return nil
		}
		return b
	}
	return nil
}
