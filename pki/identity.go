package pki

import (
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"time"
)

// OIDUserID is the subject attribute (LDAP "UID", RFC 4519) that records the
// user a device certificate belongs to.
var OIDUserID = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}

// shortNames are the attribute names NameString uses where Go's
// pkix.Name.String prints the OID and the value's DER in hex
// ("0.9.2342.19200300.100.1.1=#1305616c696365"): UID and DC (RFC 4514)
// and emailAddress (as OpenSSL prints it).
var shortNames = []struct {
	oid  asn1.ObjectIdentifier
	name string
}{
	{OIDUserID, "UID"},
	{asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, "DC"},
	{asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, "emailAddress"},
}

// NameString is n in RFC 4514 form like pkix.Name.String, but with UID,
// DC and emailAddress by name ("UID=alice,CN=alice-laptop,OU=eng"): the
// form every subject and issuer is shown, logged and matched in
// (tls.allow_subjects, policy issuer globs).
func NameString(n pkix.Name) string {
	s := n.String()
	// A parsed name has them in Names, one being built in ExtraNames.
	for _, atv := range append(slices.Clip(n.Names), n.ExtraNames...) {
		for _, sn := range shortNames {
			v, ok := atv.Value.(string)
			if !ok || !atv.Type.Equal(sn.oid) {
				continue
			}
			if der, err := asn1.Marshal(atv.Value); err == nil {
				s = strings.Replace(s, atv.Type.String()+"=#"+hex.EncodeToString(der), sn.name+"="+escapeDN(v), 1)
			}
		}
	}
	return s
}

// escapeDN escapes an attribute value as pkix.Name.String does (RFC 4514).
func escapeDN(v string) string {
	var b strings.Builder
	for k, c := range v {
		escape := false
		switch c {
		case ',', '+', '"', '\\', '<', '>', ';':
			escape = true
		case ' ':
			escape = k == 0 || k == len(v)-1
		case '#':
			escape = k == 0
		}
		if escape {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Identity is what a verified certificate says about its holder.
type Identity struct {
	Device      string    // subject CN
	User        string    // subject UID attribute, "" if absent
	Groups      []string  // subject OUs
	Orgs        []string  // subject O
	Subject     string    // NameString(cert.Subject): "UID=alice,CN=alice-laptop,OU=eng"
	Issuer      string    // NameString(cert.Issuer)
	Serial      string    // FormatSerial(cert.SerialNumber)
	Fingerprint string    // Fingerprint(cert)
	DNSNames    []string  // DNS SANs
	Emails      []string  // email SANs
	URIs        []string  // URI SANs
	NotBefore   time.Time // start of validity
	NotAfter    time.Time // end of validity
	// Lineage is the serial of the certificate the admin first issued to
	// the device (the enrollment): Serial itself for an enrollment
	// certificate, the lineage extension's serial for a renewed one, ""
	// when that extension does not decode (see LineageOf).
	Lineage string
	// LineageIssuer is the enrollment certificate's issuer (RFC 4514):
	// Issuer for an enrollment certificate. It stays the same however
	// often, and by whichever issuer, the device is renewed.
	LineageIssuer string
	// Renewed is true for a certificate the online issuer renewed (it
	// carries the lineage extension).
	Renewed bool
	// KeyOrigin is where the issuer says the device key lives: "tpm",
	// "pkcs11", or "" (a key file, or not said). See KeyOriginOf.
	KeyOrigin string
}

// IdentityOf extracts the identity of a (verified) leaf certificate. A nil
// certificate yields the zero Identity.
func IdentityOf(cert *x509.Certificate) Identity {
	if cert == nil {
		return Identity{}
	}
	id := Identity{
		Device:      cert.Subject.CommonName,
		User:        UserOf(cert),
		Groups:      clone(cert.Subject.OrganizationalUnit),
		Orgs:        clone(cert.Subject.Organization),
		Subject:     NameString(cert.Subject),
		Issuer:      NameString(cert.Issuer),
		Serial:      FormatSerial(cert.SerialNumber),
		Fingerprint: Fingerprint(cert),
		DNSNames:    clone(cert.DNSNames),
		Emails:      clone(cert.EmailAddresses),
		NotBefore:   cert.NotBefore,
		NotAfter:    cert.NotAfter,
		KeyOrigin:   KeyOriginOf(cert),
	}
	for _, u := range cert.URIs {
		id.URIs = append(id.URIs, u.String())
	}
	if l, renewed, err := LineageOf(cert); err == nil {
		id.Lineage, id.Renewed = l.SerialString(), renewed
		if renewed {
			id.LineageIssuer = l.IssuerString()
		} else {
			id.LineageIssuer = id.Issuer
		}
	} else {
		id.Renewed = true
	}
	return id
}

// UserOf returns the first UID attribute of the certificate's subject, or "".
func UserOf(cert *x509.Certificate) string {
	for _, atv := range cert.Subject.Names {
		if atv.Type.Equal(OIDUserID) {
			if s, ok := atv.Value.(string); ok {
				return s
			}
		}
	}
	return ""
}

func clone(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	return append([]string(nil), s...)
}

// Fingerprint is the lowercase hex SHA-256 of the certificate's DER, without
// colons. A nil certificate yields "".
func Fingerprint(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	sum := sha256.Sum256(cert.Raw)
	return hex.EncodeToString(sum[:])
}

// NormalizeFingerprint turns a SHA-256 fingerprint in any common spelling
// (colons or spaces between bytes, any case, an optional "sha256:" or openssl
// "SHA256 Fingerprint=" prefix) into the canonical form of [Fingerprint].
func NormalizeFingerprint(s string) (string, error) {
	t := strings.TrimSpace(s)
	low := strings.ToLower(t)
	for _, p := range []string{"sha256 fingerprint=", "sha256:", "sha256="} {
		if strings.HasPrefix(low, p) {
			low = low[len(p):]
			break
		}
	}
	var b strings.Builder
	for i := 0; i < len(low); i++ {
		c := low[i]
		switch {
		case c == ':' || c == ' ' || c == '-':
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f':
			b.WriteByte(c)
		default:
			return "", fmt.Errorf("fingerprint %q: unexpected character %q", s, c)
		}
	}
	if b.Len() != sha256.Size*2 {
		return "", fmt.Errorf("fingerprint %q: want %d hex digits (SHA-256), got %d", s, sha256.Size*2, b.Len())
	}
	return b.String(), nil
}
