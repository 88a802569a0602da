package hwkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// handshake runs a TLS 1.3 handshake in which the client proves key (a
// hardware Signer) against a server that verifies the client certificate,
// so the signature made in the hardware is checked by crypto/tls itself.
func handshake(t *testing.T, key crypto.Signer) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(name string, pub crypto.PublicKey, eku x509.ExtKeyUsage) []byte {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{eku}, KeyUsage: x509.KeyUsageDigitalSignature}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	srvCfg := &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf("gw", srvKey.Public(), x509.ExtKeyUsageServerAuth)}, PrivateKey: srvKey}}}
	cliCfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "gw",
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf("dev", key.Public(), x509.ExtKeyUsageClientAuth)}, PrivateKey: key}}}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	errc := make(chan error, 1)
	go func() {
		s := tls.Server(a, srvCfg)
		errc <- s.Handshake()
		s.Close()
	}()
	c := tls.Client(b, cliCfg)
	cerr := c.Handshake()
	if cerr == nil {
		// TLS 1.3: the server checks the client's signature after the
		// client's side is done; read to see its verdict.
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, _ = c.Read(make([]byte, 1))
	}
	c.Close()
	if serr := <-errc; serr != nil {
		t.Fatalf("server refused the hardware key's handshake: %v (client: %v)", serr, cerr)
	}
	if cerr != nil {
		t.Fatalf("client handshake: %v", cerr)
	}
}
