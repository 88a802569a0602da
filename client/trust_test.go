package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/tunnel"
)

// handshakeWith runs the client's TLS config against a loopback listener
// presenting gw and returns the client's handshake error.
func handshakeWith(t *testing.T, c *Client, gw tls.Certificate) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		defer raw.Close()
		srv := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{gw}, ClientAuth: tls.RequireAnyClientCert, NextProtos: []string{tunnel.ALPN}})
		_ = srv.Handshake()
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(raw, c.tlsConfig())
	err = tc.Handshake()
	tc.Close()
	<-done
	return err
}

func trustClient(t *testing.T, ca *testCA, pin string) *Client {
	dev, _, _ := ca.leaf(t, "laptop", deviceLeaf)
	return &Client{mat: &material{cert: dev, leaf: dev.Leaf, roots: pki.NewPool([]*x509.Certificate{ca.cert}), pin: pin, srvName: "gw.test"}}
}

// The laptop's own rules for the gateway's leaf: crypto/tls alone accepts
// no EKU, anyExtendedKeyUsage and CA:TRUE leaves from the trusted CA.
func TestGatewayCertificateRules(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	other := newTestCA(t, "Other CA")
	tests := []struct {
		name string
		ca   *testCA
		edit func(*x509.Certificate)
		want string // "" = accepted
	}{
		{"serverAuth", ca, gatewayLeaf, ""},
		{"serverAuth and anyEKU", ca, both(gatewayLeaf, func(c *x509.Certificate) {
			c.ExtKeyUsage = append(c.ExtKeyUsage, x509.ExtKeyUsageAny)
		}), ""},
		{"no EKU", ca, both(gatewayLeaf, func(c *x509.Certificate) { c.ExtKeyUsage = nil }), "has no extended key usage"},
		{"anyEKU only", ca, both(gatewayLeaf, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny} }), "anyExtendedKeyUsage instead of serverAuth"},
		{"CA:TRUE", ca, both(gatewayLeaf, func(c *x509.Certificate) { c.IsCA = true }), "is a CA certificate"},
		{"clientAuth only", ca, both(gatewayLeaf, deviceLeaf), "incompatible key usage"},
		{"other CA", other, gatewayLeaf, "unknown authority"},
		{"wrong name", ca, both(gatewayLeaf, func(c *x509.Certificate) { c.DNSNames = []string{"evil.test"} }), "not gw.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gw, _, _ := tt.ca.leaf(t, "gw.test", tt.edit)
			err := handshakeWith(t, trustClient(t, ca, ""), gw)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("good gateway refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("handshake error = %v, want %q", err, tt.want)
			}
			if r := classify(err); r.Code != codeGatewayCert || r.Permanent {
				t.Fatalf("classified as %+v, want %s (transient)", r, codeGatewayCert)
			}
		})
	}
}

// A gateway certificate from the right CA with the right name is still
// refused when it is not the pinned one.
func TestGatewayPin(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	gw, _, _ := ca.leaf(t, "gw.test", gatewayLeaf)
	twin, _, _ := ca.leaf(t, "gw.test", gatewayLeaf) // same CA, same name, other key
	if err := handshakeWith(t, trustClient(t, ca, pki.Fingerprint(gw.Leaf)), gw); err != nil {
		t.Fatalf("pinned gateway refused: %v", err)
	}
	err := handshakeWith(t, trustClient(t, ca, pki.Fingerprint(gw.Leaf)), twin)
	if !errors.Is(err, errPinMismatch) || !strings.Contains(err.Error(), pki.Fingerprint(twin.Leaf)) {
		t.Fatalf("unpinned gateway: err = %v, want a pin mismatch naming its fingerprint", err)
	}
	if r := classify(err); r.Code != codePin {
		t.Fatalf("pin mismatch classified as %+v", r)
	}
}
