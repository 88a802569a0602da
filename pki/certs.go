package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/sallyport/sallyport/internal/userfile"
)

// LoadCertificates reads a PEM file holding one or more CERTIFICATE blocks.
func LoadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := ReadPEMFile(path)
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

// ReadPEMFile reads a certificate, key or CRL file: a regular file of at
// most userfile.MaxPEM bytes (internal/userfile), so a path naming
// /dev/zero or a FIFO gets an error, not a hang or a huge allocation.
func ReadPEMFile(path string) ([]byte, error) {
	return userfile.Read(path, userfile.MaxPEM)
}

// LoadKeyPair is tls.LoadX509KeyPair through ReadPEMFile.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := ReadPEMFile(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := ReadPEMFile(keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}
