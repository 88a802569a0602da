package ca

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/pki"
)

// RevokeResult is what Revoke did to one certificate.
type RevokeResult struct {
	Record  Record
	Already bool // it had been revoked before (nothing changed)
}

// Revoke marks certificates revoked in the index and rewrites the CRL. The
// target is either a serial (any spelling pki.ParseSerial accepts, or plain
// decimal, resolved against the index) or, when serial is "", every
// unrevoked certificate of device. Revoking again is not an error.
func (p *PKI) Revoke(serial, device, reason string, crlDays int) ([]RevokeResult, error) {
	if (serial == "") == (device == "") {
		return nil, errors.New("revoke: give exactly one of a serial or a device name")
	}
	if reason == "" {
		reason = "unspecified"
	}
	code, err := pki.ParseReason(reason)
	if err != nil {
		return nil, err
	}
	done, iss, st, err := p.openForSigning()
	if err != nil {
		return nil, err
	}
	defer done()
	var targets []Record
	if serial != "" {
		r, err := resolveSerial(st, serial)
		if err != nil {
			return nil, err
		}
		targets = append(targets, *r)
	} else {
		if targets, err = st.byName(KindDevice, device); err != nil {
			return nil, err
		}
		if len(targets) == 0 {
			return nil, fmt.Errorf("no certificate for device %q in %s", device, p.Dir)
		}
	}
	now := p.now().UTC()
	var res []RevokeResult
	var serials []string
	cas := p.caNames()
	for _, r := range targets {
		if !cas[r.Issuer] {
			return nil, fmt.Errorf("serial %s (%s %s) was issued by %s, not by a CA of this PKI; it cannot be revoked here", r.Serial, r.Kind, r.Name, r.Issuer)
		}
		if (r.Kind == KindIntermediate || r.Kind == KindIssuer) && !fileExists(p.Path("root.key")) {
			return nil, fmt.Errorf("serial %s (%s %s) was issued by the root, whose CRL revokes it: bring the root key %s back from offline storage for this", r.Serial, r.Kind, r.Name, p.Path("root.key"))
		}
		if r.Revoked() {
			res = append(res, RevokeResult{Record: r, Already: true})
			continue
		}
		r.RevokedAt = now
		r.Reason = pki.ReasonString(code)
		res = append(res, RevokeResult{Record: r})
		serials = append(serials, r.Serial)
	}
	if err := st.revoke(serials, now, pki.ReasonString(code)); err != nil {
		return nil, err
	}
	if _, err := p.writeCRL(st, iss, crlDays); err != nil {
		return nil, fmt.Errorf("revocation recorded, but the CRL was not rewritten (run: sallyport pki crl): %w", err)
	}
	return res, nil
}

// resolveSerial finds the record a user-typed serial names. Digits alone are
// tried both as hex (canonical) and as decimal.
func resolveSerial(st *store, s string) (*Record, error) {
	var hexRec, decRec *Record
	n, herr := pki.ParseSerial(s)
	if herr == nil {
		r, err := st.bySerial(pki.FormatSerial(n))
		if err != nil {
			return nil, err
		}
		hexRec = r
	}
	t := strings.TrimSpace(s)
	if t != "" && strings.Trim(t, "0123456789") == "" {
		if d, err := pki.ParseSerial("d:" + t); err == nil {
			r, err := st.bySerial(pki.FormatSerial(d))
			if err != nil {
				return nil, err
			}
			decRec = r
		}
	}
	switch {
	case hexRec != nil && decRec != nil && hexRec.Serial != decRec.Serial:
		return nil, fmt.Errorf("serial %q is ambiguous: hex %s and decimal both name certificates; write it as 0x%s or d:%s", s, hexRec.Serial, hexRec.Serial, t)
	case hexRec != nil:
		return hexRec, nil
	case decRec != nil:
		return decRec, nil
	case herr != nil && decRec == nil:
		return nil, herr
	}
	return nil, fmt.Errorf("serial %q is not in this PKI's index (see: sallyport pki list); a certificate a gateway renewed is revoked through its device: sallyport pki revoke --device NAME cuts every renewal of it", s)
}

// WriteCRL re-signs the CRL with every revocation in the index, a new CRL
// number and nextUpdate days from now (default DefaultCRLDays).
func (p *PKI) WriteCRL(days int) (*x509.RevocationList, error) {
	done, iss, st, err := p.openForSigning()
	if err != nil {
		return nil, err
	}
	defer done()
	return p.writeCRL(st, iss, days)
}

// writeCRL signs and writes crl.pem: one CRL by the issuing CA iss, and
// one by each other CA that signs CRLs here (crlSigners: the root when an
// intermediate issues, the previous CA during a rotation), each listing
// every revocation of the index. A CRL lists certificates of other issuers
// only for the gateway's lineage check, which matches by serial (a renewed
// certificate names its enrollment by serial, and after a rotation the
// enrollment's own CA may be gone). It records the CRL number in the
// index and returns the issuing CA's CRL.
func (p *PKI) writeCRL(st *store, iss *issuer, days int) (*x509.RevocationList, error) {
	if days <= 0 {
		days = DefaultCRLDays
	}
	last, err := st.crlNumber()
	if err != nil {
		return nil, err
	}
	revoked, err := st.revokedRecords()
	if err != nil {
		return nil, err
	}
	num := last + 1
	// Never go backwards, even if the index was restored from a backup.
	if data, err := os.ReadFile(p.Path("crl.pem")); err == nil {
		if b, _ := pem.Decode(data); b != nil {
			if old, err := x509.ParseRevocationList(b.Bytes); err == nil && old.Number != nil && old.Number.IsInt64() && old.Number.Int64() >= num {
				num = old.Number.Int64() + 1
			}
		}
	}
	now := p.now()
	var entries []x509.RevocationListEntry
	for _, r := range revoked {
		if !r.Revoked() {
			continue
		}
		n, err := pki.ParseSerial(r.Serial)
		if err != nil {
			return nil, fmt.Errorf("index: bad serial %q: %w", r.Serial, err)
		}
		code, _ := pki.ParseReason(r.Reason)
		entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: r.RevokedAt, ReasonCode: code})
	}
	others, err := p.crlSigners(iss)
	if err != nil {
		return nil, fmt.Errorf("CRL signers: %w", err)
	}
	var out []byte
	var first *x509.RevocationList
	for _, signer := range append([]*issuer{iss}, others...) {
		tmpl := &x509.RevocationList{
			Number:                    bigInt(num),
			ThisUpdate:                now.Add(-backdate),
			NextUpdate:                now.AddDate(0, 0, days),
			RevokedCertificateEntries: entries,
		}
		der, err := x509.CreateRevocationList(rand.Reader, tmpl, signer.cert, signer.key)
		if err != nil {
			return nil, fmt.Errorf("sign CRL by %q: %w", signer.cert.Subject.CommonName, err)
		}
		if first == nil {
			if first, err = x509.ParseRevocationList(der); err != nil {
				return nil, err
			}
		}
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})...)
	}
	if err := atomicfile.Write(p.Path("crl.pem"), out, 0o644); err != nil {
		return nil, err
	}
	if err := st.setCRLNumber(num); err != nil {
		return nil, err
	}
	return first, nil
}

// LoadRevocations loads crl.pem verified against the PKI's CA certificates.
func (p *PKI) LoadRevocations() (*pki.RevocationList, error) {
	roots, inter, err := p.Roots()
	if err != nil {
		return nil, err
	}
	bundle, _ := p.TrustBundle() // a previous CA's CRL during a rotation
	return pki.LoadCRL(p.Path("crl.pem"), append(append(roots, inter...), bundle...))
}

func bigInt(n int64) *big.Int { return big.NewInt(n) }

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
