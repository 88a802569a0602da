package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// maxFileSize bounds the PEM/DER files this package reads.
const maxFileSize = 16 << 20

// LoadCertificates reads a PEM file holding one or more CERTIFICATE blocks.
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, fmt.Errorf("load certificates: %w", err)
	}
	certs, err := ParseCertificatesPEM(data)
	if err != nil {
		return nil, fmt.Errorf("load certificates %s: %w", path, err)
	}
	return certs, nil
}

// ParseCertificatesPEM parses every CERTIFICATE block in data, in order.
// Other PEM block types (keys, CRLs, parameters) are skipped; text between
// blocks is ignored. It is an error when there is no certificate or when a
// CERTIFICATE block does not parse.
func ParseCertificatesPEM(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		if len(bytes.TrimSpace(data)) > 0 && !bytes.Contains(data, []byte("-----BEGIN")) {
			return nil, errors.New("no PEM CERTIFICATE block found (is the file DER? convert with: openssl x509 -inform der)")
		}
		return nil, errors.New("no PEM CERTIFICATE block found")
	}
	return certs, nil
}

// NewPool returns a certificate pool holding certs (nil entries skipped).
func NewPool(certs []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		if c != nil {
			p.AddCert(c)
		}
	}
	return p
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxFileSize {
		return nil, fmt.Errorf("%s: file too large (%d bytes)", path, fi.Size())
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return buf.Bytes(), nil
}
