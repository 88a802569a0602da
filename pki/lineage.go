package pki

// Lineage (ARCHITECTURE.md, "Renewal"): every certificate the gateway's
// online issuer renews carries the serial and issuer of the certificate the
// admin first issued to the device (its enrollment), in a non-critical
// extension. Revoking the enrollment serial then refuses every renewal of
// it, on every gateway that reads the CRL, with no state shared between
// gateways. It also carries the serial of every CA below the trust anchor
// that signed a certificate of the lineage (the enrollment's intermediate,
// each online issuer that renewed it): revoking one of those CAs cuts the
// renewals descending from what it signed too, which a renewed
// certificate's own chain (the current online issuer) no longer shows.
//
//	SallyportLineage ::= SEQUENCE {
//	    serial  INTEGER,  -- serial of the enrollment certificate
//	    issuer  Name,     -- issuer of the enrollment certificate, as in it
//	    cas     SEQUENCE SIZE (1..16) OF INTEGER OPTIONAL
//	                      -- serials of the CAs that signed the lineage
//	}

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
)

// OIDArc is the private OID arc of sallyport's certificate and request
// extensions: 1.3.6.1.4.1.32473 is IANA's enterprise number for
// documentation (RFC 5612), sub-arc 115.112 ("sp"). No enterprise owns it,
// so no other product's extension collides with ours; ARCHITECTURE.md
// records it and the plan to move to a registered number.
var OIDArc = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 32473, 115, 112}

// OIDLineage is the lineage extension (non-critical).
var OIDLineage = append(append(asn1.ObjectIdentifier{}, OIDArc...), 1)

// maxLineageLen bounds the extension's value; a serial is at most 20
// octets and an issuer name a few hundred.
const maxLineageLen = 4096

// MaxLineageCAs bounds Lineage.CAs: a lineage gains a CA only when a
// different CA signs its next certificate (a new online issuer, a CA
// rotation), a few times in a device's life.
const MaxLineageCAs = 16

// Lineage names the enrollment certificate a renewed certificate descends
// from.
type Lineage struct {
	Serial    *big.Int // the enrollment certificate's serial
	RawIssuer []byte   // its issuer Name, DER
	// CAs are the serials of the CAs below the trust anchor that signed a
	// certificate of the lineage, oldest first (none for an enrollment).
	CAs []*big.Int
}

// SerialString is FormatSerial(l.Serial).
func (l Lineage) SerialString() string { return FormatSerial(l.Serial) }

// IssuerString is the issuer in RFC 4514 form, as NameString gives a
// certificate's Issuer.
func (l Lineage) IssuerString() string {
	var rdn pkix.RDNSequence
	if rest, err := asn1.Unmarshal(l.RawIssuer, &rdn); err != nil || len(rest) > 0 {
		return ""
	}
	var n pkix.Name
	n.FillFromRDNSequence(&rdn)
	return NameString(n)
}

type lineageASN1 struct {
	Serial *big.Int
	Issuer asn1.RawValue
	CAs    []*big.Int `asn1:"optional,omitempty"`
}

// LineageExtension encodes l as the (non-critical) lineage extension.
func LineageExtension(l Lineage) (pkix.Extension, error) {
	if l.Serial == nil || l.Serial.Sign() <= 0 {
		return pkix.Extension{}, errors.New("lineage: serial must be positive")
	}
	if err := checkName(l.RawIssuer); err != nil {
		return pkix.Extension{}, fmt.Errorf("lineage: issuer: %w", err)
	}
	if err := checkLineageCAs(l.CAs); err != nil {
		return pkix.Extension{}, fmt.Errorf("lineage: %w", err)
	}
	der, err := asn1.Marshal(lineageASN1{Serial: l.Serial, Issuer: asn1.RawValue{FullBytes: l.RawIssuer}, CAs: l.CAs})
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("lineage: %w", err)
	}
	return pkix.Extension{Id: OIDLineage, Value: der}, nil
}

// checkLineageCAs accepts at most MaxLineageCAs positive serials.
func checkLineageCAs(cas []*big.Int) error {
	if len(cas) > MaxLineageCAs {
		return fmt.Errorf("%d CAs in the lineage, at most %d", len(cas), MaxLineageCAs)
	}
	for _, s := range cas {
		if s == nil || s.Sign() <= 0 {
			return errors.New("a CA serial of the lineage is not positive")
		}
	}
	return nil
}

// checkName accepts the DER of one X.501 Name (a SEQUENCE of RDNs).
func checkName(der []byte) error {
	var rdn pkix.RDNSequence
	rest, err := asn1.Unmarshal(der, &rdn)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return errors.New("trailing data after the name")
	}
	return nil
}

// LineageOf returns the lineage a certificate carries. A certificate
// without the extension is its own enrollment: its serial and issuer, with
// renewed false. A certificate whose extension does not decode (or is
// marked critical, or appears twice) is an error: the trust decision
// cannot tell whether its enrollment was revoked, so it must refuse it.
func LineageOf(cert *x509.Certificate) (l Lineage, renewed bool, err error) {
	var found *pkix.Extension
	for i := range cert.Extensions {
		e := &cert.Extensions[i]
		if !e.Id.Equal(OIDLineage) {
			continue
		}
		if found != nil {
			return Lineage{}, true, errors.New("lineage extension appears twice")
		}
		found = e
	}
	if found == nil {
		return Lineage{Serial: cert.SerialNumber, RawIssuer: cert.RawIssuer}, false, nil
	}
	l, err = parseLineage(found.Value)
	if err == nil && found.Critical {
		err = errors.New("lineage extension is marked critical")
	}
	return l, true, err
}

func parseLineage(der []byte) (Lineage, error) {
	if len(der) > maxLineageLen {
		return Lineage{}, fmt.Errorf("lineage extension of %d bytes exceeds %d", len(der), maxLineageLen)
	}
	var v lineageASN1
	rest, err := asn1.Unmarshal(der, &v)
	if err != nil {
		return Lineage{}, fmt.Errorf("lineage extension: %w", err)
	}
	if len(rest) > 0 {
		return Lineage{}, errors.New("lineage extension: trailing data")
	}
	if v.Serial == nil || v.Serial.Sign() <= 0 {
		return Lineage{}, errors.New("lineage extension: serial is not positive")
	}
	if err := checkName(v.Issuer.FullBytes); err != nil {
		return Lineage{}, fmt.Errorf("lineage extension: issuer: %w", err)
	}
	if err := checkLineageCAs(v.CAs); err != nil {
		return Lineage{}, fmt.Errorf("lineage extension: %w", err)
	}
	return Lineage{Serial: v.Serial, RawIssuer: bytes.Clone(v.Issuer.FullBytes), CAs: v.CAs}, nil
}
