package ca

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/sallyport/sallyport/pki"
)

// Kinds of certificate recorded in the index.
const (
	KindDevice       = pki.KindDevice
	KindServer       = pki.KindServer
	KindIntermediate = "intermediate"
)

// Record is one issued certificate in the index.
type Record struct {
	Serial      string    `json:"serial"` // pki.FormatSerial
	Kind        string    `json:"kind"`   // device, server, intermediate
	Name        string    `json:"name"`   // device name or server name (CN)
	User        string    `json:"user,omitempty"`
	Groups      []string  `json:"groups,omitempty"`
	Issuer      string    `json:"issuer"`
	Fingerprint string    `json:"fingerprint"`
	NotBefore   time.Time `json:"not_before"`
	NotAfter    time.Time `json:"not_after"`
	IssuedAt    time.Time `json:"issued_at"`
	RevokedAt   time.Time `json:"revoked_at,omitzero"`
	Reason      string    `json:"reason,omitempty"`   // revocation reason name
	FromCSR     bool      `json:"from_csr,omitempty"` // signed from a CSR (no key here)
	// KeyOrigin is where the admin vouched the key was made ("tpm",
	// "pkcs11"; "" for none), as the certificate records it.
	KeyOrigin string `json:"key_origin,omitempty"`
}

// Revoked reports whether the record has been revoked.
func (r *Record) Revoked() bool { return !r.RevokedAt.IsZero() }

// Status is "revoked", "expired", "not yet valid", "expires in Nd" (under 30
// days left) or "valid" at time now.
func (r *Record) Status(now time.Time) string {
	switch {
	case r.Revoked():
		return "revoked"
	case now.After(r.NotAfter):
		return "expired"
	case now.Before(r.NotBefore):
		return "not yet valid"
	case r.NotAfter.Sub(now) < 30*24*time.Hour:
		return fmt.Sprintf("expires in %dd", int(r.NotAfter.Sub(now).Hours()/24))
	}
	return "valid"
}

// Index is the content of the index.json an older release kept (read
// once, to migrate it into index.db).
type Index struct {
	Version   int      `json:"version"`
	CRLNumber int64    `json:"crl_number"` // number of the last CRL written
	Certs     []Record `json:"certs"`
}

func readLegacyIndex(path string) (*Index, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Index{Version: 1}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read index: %w", err)
	}
	var ix Index
	if err := json.Unmarshal(data, &ix); err != nil {
		return nil, fmt.Errorf("parse index %s: %w", path, err)
	}
	if ix.Version != 1 {
		return nil, fmt.Errorf("index %s: unsupported version %d", path, ix.Version)
	}
	return &ix, nil
}
