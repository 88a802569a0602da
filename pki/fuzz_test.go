package pki

import (
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

func FuzzParseSerial(f *testing.F) {
	for _, s := range []string{"5a3b01", "5A:3B:01", "0x1f", "d:123", "serial=ABCD", "", "-1", "d:", "zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSerial(s)
		if err != nil {
			return
		}
		back, err := ParseSerial(FormatSerial(n))
		if err != nil || back.Cmp(n) != 0 {
			t.Fatalf("round trip of %q: %v %v", s, back, err)
		}
	})
}

func FuzzParseCertificatesPEM(f *testing.F) {
	ca := newTestCA(f, "Fuzz CA")
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{})
	f.Add(ca.cert.Raw)
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCertificatesPEM(data)
		if err == nil && len(certs) == 0 {
			t.Fatal("no error and no certificates")
		}
		for _, c := range certs {
			_ = IdentityOf(c)
		}
	})
}

func FuzzParseCRL(f *testing.F) {
	ca := newTestCA(f, "Fuzz CA")
	crl := ca.crl(f, time.Now().Add(time.Hour), big.NewInt(5), big.NewInt(7))
	f.Add(crl)
	blk, _ := pem.Decode(crl)
	f.Add(blk.Bytes)
	f.Add([]byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"))
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	issuers := []*x509.Certificate{ca.cert}
	f.Fuzz(func(t *testing.T, data []byte) {
		rl, err := ParseCRL(data, issuers)
		if err != nil {
			return
		}
		_, _ = rl.Revoked(ca.cert)
		_ = rl.NextUpdate()
	})
}
