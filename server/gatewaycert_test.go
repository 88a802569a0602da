package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/netip"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/tunnel"
)

// TestDeviceRejectsGatewayCert: a laptop that refuses the gateway's
// certificate (its server_name is not one of the certificate's names, or
// the CA in its file is another one) is logged as the gateway's own
// problem, reason gateway-cert-rejected, not as a handshake that failed
// with "bad certificate", which reads as if the device's were bad.
func TestDeviceRejectsGatewayCert(t *testing.T) {
	for _, tt := range []struct {
		name       string
		serverName string
		otherCA    bool
	}{
		{"wrong name", "vpn.example", false},
		{"other CA", "gw.test", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := newGatewayHarness(t, engPolicy, netip.Prefix{})
			defer h.close()
			roots := h.gwPool
			if tt.otherCA {
				roots = x509.NewCertPool()
				roots.AddCert(newTestCA(t, "Other CA").cert)
			}
			cert := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
			cli, srv := h.tcpPair()
			h.conns.Add(1)
			go func() { defer h.conns.Done(); h.s.handshake(context.Background(), srv, h.s.tlsConfig()) }()
			tc := tls.Client(cli, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: tt.serverName, NextProtos: []string{tunnel.ALPN},
				GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }})
			if err := tc.Handshake(); err == nil {
				t.Fatal("the device accepted the gateway")
			}
			tc.Close()
			waitFor(t, func() bool { return h.s.Status().Refused[string(tunnel.ReasonGatewayCert)] == 1 })
			line := h.logs.String()
			for _, want := range []string{`msg="handshake refused"`, "reason=gateway-cert-rejected", "the device refused this gateway's certificate (remote error: tls: bad certificate)",
				"server_name", "tls.cert"} {
				if !strings.Contains(line, want) {
					t.Errorf("gateway log lacks %q:\n%s", want, line)
				}
			}
			if c := h.s.Status().Refused; c[string(tunnel.ReasonHandshake)] != 0 || c[string(tunnel.ReasonUnknownCA)] != 0 {
				t.Errorf("also counted as %v", c)
			}
		})
	}
}
