package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

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
	tc := tls.Client(raw, c.tlsConfig(c.material()))
	err = tc.Handshake()
	tc.Close()
	<-done
	return err
}

func trustClient(t *testing.T, ca *testCA, pin string) *Client {
	dev, _, _ := ca.leaf(t, "laptop", deviceLeaf)
	c := &Client{}
	c.matp.Store(&material{cert: dev, leaf: dev.Leaf, roots: pki.NewPool([]*x509.Certificate{ca.cert}), pin: pin, srvName: "gw.test"})
	return c
}

// The laptop's own rules for the gateway's leaf: crypto/tls alone accepts
// no EKU, anyExtendedKeyUsage and CA:TRUE leaves from the trusted CA. Each
// refusal's sentence (sallyport status, the log) names the real cause: the
// names the certificate is valid for and the one expected, the CA that is
// not the file's, the dates.
func TestGatewayCertificateRules(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	other := newTestCA(t, "Other CA")
	tests := []struct {
		name string
		ca   *testCA
		edit func(*x509.Certificate)
		want string // in the handshake error; "" = accepted
		msg  string // in the sentence for the employee
	}{
		{"serverAuth", ca, gatewayLeaf, "", ""},
		{"serverAuth and anyEKU", ca, both(gatewayLeaf, func(c *x509.Certificate) {
			c.ExtKeyUsage = append(c.ExtKeyUsage, x509.ExtKeyUsageAny)
		}), "", ""},
		{"no EKU", ca, both(gatewayLeaf, func(c *x509.Certificate) { c.ExtKeyUsage = nil }), "has no extended key usage",
			`not connected: gateway certificate "gw.test" has no extended key usage; serverAuth is required — retrying`},
		{"anyEKU only", ca, both(gatewayLeaf, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageAny} }), "anyExtendedKeyUsage instead of serverAuth",
			"anyExtendedKeyUsage instead of serverAuth"},
		{"CA:TRUE", ca, both(gatewayLeaf, func(c *x509.Certificate) { c.IsCA = true }), "is a CA certificate", "is a CA certificate"},
		{"clientAuth only", ca, both(gatewayLeaf, deviceLeaf), "incompatible key usage",
			"not connected: the gateway's certificate is not made for a server (its extended key usage lacks serverAuth)"},
		{"other CA", other, gatewayLeaf, "unknown authority",
			`not connected: the CA in your file did not sign this gateway's certificate (issued by "Other CA"); possibly a network that intercepts traffic — retrying; tell your admin if this lasts`},
		{"wrong name", ca, both(gatewayLeaf, func(c *x509.Certificate) { c.DNSNames = []string{"vpn.example", "evil.test"} }), "not gw.test",
			"not connected: the gateway's certificate is valid for vpn.example, evil.test, 127.0.0.1, not gw.test (server_name in your file) — retrying; tell your admin if this lasts"},
		{"no names", ca, both(gatewayLeaf, func(c *x509.Certificate) { c.DNSNames, c.IPAddresses = nil, nil }), "legacy Common Name",
			`has no DNS or IP name (subject alternative name), only the common name "gw.test", which is not accepted; server_name in your file is gw.test`},
		{"many names, one hostile", ca, both(gatewayLeaf, func(c *x509.Certificate) {
			c.DNSNames = []string{"a.test", "b.test", "c\x1b[2J.test", "d.test", "e.test", "f.test"}
		}), "not gw.test", "valid for a.test, b.test, c?[2J.test, d.test, e.test, and 2 more, not gw.test"},
		{"expired", ca, both(gatewayLeaf, func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)
		}), "expired", "not connected: the gateway's certificate expired on 2021-01-01T00:00:00Z — retrying"},
		{"not yet valid", ca, both(gatewayLeaf, func(c *x509.Certificate) { c.NotBefore = time.Now().Add(12 * time.Hour) }), "not yet valid",
			"the gateway's certificate is not valid until"},
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
			r := classify(err)
			if r.Code != codeGatewayCert || r.Permanent {
				t.Fatalf("classified as %+v, want %s (transient)", r, codeGatewayCert)
			}
			if !strings.Contains(r.Message, tt.msg) || strings.ContainsAny(r.Message, "\x1b\n") || strings.Contains(r.Message, "possibly") != (tt.name == "other CA") {
				t.Fatalf("sentence %q\nwant it to contain %q", r.Message, tt.msg)
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
