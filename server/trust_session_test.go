package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/netip"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/server/policy"
	"github.com/sallyport/sallyport/tunnel"
)

const engPolicyTOML = `
[[policy]]
name = "eng"
match = { ou = ["eng"] }
allow = ["192.168.77.0/24 udp/53", "192.168.88.0/24"]
`

var engPolicy = []policy.Policy{{Name: "eng", Match: policy.Match{OU: []string{"eng"}}, Allow: []string{"192.168.77.0/24 udp/53", "192.168.88.0/24"}}}

// reload rewrites the harness's server.toml and reloads it.
func (h *gatewayHarness) reload(extra string) {
	h.t.Helper()
	writeFile(h.t, h.s.config().Path, harnessTOML(extra))
	h.s.Reload("test")
}

// dir is the harness's config directory.
func (h *gatewayHarness) dir() string { return filepath.Dir(h.s.config().Path) }

// writeCRL writes crl.pem revoking serials, with the given CRL number.
func (h *gatewayHarness) writeCRL(number int64, next time.Time, serials ...*big.Int) {
	h.t.Helper()
	var entries []x509.RevocationListEntry
	for _, s := range serials {
		entries = append(entries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()})
	}
	h.writeCRLEntries(number, next, entries...)
}

// writeCRLEntries writes crl.pem with the given entries (reasons and all).
func (h *gatewayHarness) writeCRLEntries(number int64, next time.Time, entries ...x509.RevocationListEntry) {
	h.t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(number), ThisUpdate: time.Now().Add(-time.Hour),
		NextUpdate: next, RevokedCertificateEntries: entries}, h.ca.cert, h.ca.key)
	if err != nil {
		h.t.Fatal(err)
	}
	writePEM(h.t, filepath.Join(h.dir(), "crl.pem"), "X509 CRL", der)
}

func serialOf(t *testing.T, c tls.Certificate) *big.Int {
	t.Helper()
	x, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return x.SerialNumber
}

// wantClose reads frames until a Close and checks its reason; the stream
// must end after it.
func (d *device) wantClose(t *testing.T, reason tunnel.Reason) {
	t.Helper()
	typ, payload, ok := d.next(5 * time.Second)
	if !ok || typ != tunnel.FrameClose {
		t.Fatalf("want close %q, got frame %#x (ok %v)", reason, typ, ok)
	}
	m, err := tunnel.DecodeClose(payload)
	if err != nil || m.Reason != string(reason) {
		t.Fatalf("close reason %q (%v), want %q", m.Reason, err, reason)
	}
	if _, _, ok := d.next(2 * time.Second); ok {
		t.Fatal("stream still open after close")
	}
}

// sessionOf reports whether device has a live session.
func (h *gatewayHarness) sessionOf(device string) (SessionStatus, bool) {
	for _, st := range h.s.Status().Sessions {
		if st.Device == device {
			return st, true
		}
	}
	return SessionStatus{}, false
}

// TestHelloAfterRevocation is the thief's half-open connection: TLS done
// while the device was still valid, hello held back across a revocation
// (and, separately, across a policy cut). The hello must not buy a session.
func TestHelloAfterRevocation(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(h *gatewayHarness, serial *big.Int)
		reason tunnel.Reason
	}{
		{"revoked", func(h *gatewayHarness, serial *big.Int) {
			h.writeCRL(2, time.Now().Add(time.Hour), serial)
			h.reload("crl = \"crl.pem\"\n" + engPolicyTOML)
		}, tunnel.ReasonRevoked},
		{"policy cut", func(h *gatewayHarness, _ *big.Int) {
			h.reload(strings.ReplaceAll(engPolicyTOML, `ou = ["eng"]`, `ou = ["ops"]`))
		}, tunnel.ReasonNoPolicy},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := runtime.NumGoroutine()
			h := newGatewayHarness(t, engPolicy, netip.Prefix{})
			cert := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
			d := h.dial(cert) // handshake passes: alice is valid now
			tc.change(h, serialOf(t, cert))
			if err := d.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion}); err != nil {
				t.Fatal(err)
			}
			// The config may come first (the device was valid when it
			// arrived); what matters is that no session goes live.
			typ, payload, ok := d.next(5 * time.Second)
			if ok && typ == tunnel.FrameConfig {
				typ, payload, ok = d.next(5 * time.Second)
			}
			m, _ := tunnel.DecodeClose(payload)
			if !ok || typ != tunnel.FrameClose || m.Reason != string(tc.reason) {
				t.Fatalf("after hello: frame %#x %q (ok %v), want close %q", typ, m.Reason, ok, tc.reason)
			}
			if _, live := h.sessionOf("alice"); live {
				t.Fatal("the held-back hello got a session")
			}
			h.close()
			d.tc.Close()
			waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
		})
	}
}

// TestRefusalTold: an authenticated device that is refused learns why in a
// Close frame; one that does not chain to client_ca gets only a TLS alert.
func TestRefusalTold(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	bob := h.ca.leafWithKey(t, "bob", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	h.writeCRL(2, time.Now().Add(time.Hour), serialOf(t, bob))
	h.reload("crl = \"crl.pem\"\n" + engPolicyTOML)

	h.dial(bob).wantClose(t, tunnel.ReasonRevoked)
	h.dial(h.ca.leafWithKey(t, "carol", []string{"sales"}, x509.ExtKeyUsageClientAuth)).wantClose(t, tunnel.ReasonNoPolicy)
	h.dial(h.ca.leafWithKey(t, "srv", []string{"eng"}, x509.ExtKeyUsageServerAuth)).wantClose(t, tunnel.ReasonBadEKU)
	d := h.dial(newTestCA(t, "Other CA").leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	_ = d.tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := d.tc.Read(make([]byte, 1)); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("unverifiable chain: read %v, want the TLS alert bad certificate", err)
	}
	waitFor(t, func() bool {
		c := h.s.Status().Refused
		return c[string(tunnel.ReasonRevoked)] == 1 && c[string(tunnel.ReasonNoPolicy)] == 1 && c[string(tunnel.ReasonBadEKU)] == 1 && c[string(tunnel.ReasonUnknownCA)] == 1
	})
}

// TestReloadRechecksLiveSessions: a reload that removes a destination is
// enforced on the live session at once; one that replaces client_ca cuts
// the devices of the CA that went; one that revokes cuts the device.
func TestReloadRechecksLiveSessions(t *testing.T) {
	before := runtime.NumGoroutine()
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	alice := h.connect(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	bobCert := h.ca.leafWithKey(t, "bob", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	bob := h.connect(bobCert)

	// Policy cut: 192.168.88.0/24 is no longer allowed.
	h.reload(strings.ReplaceAll(engPolicyTOML, `, "192.168.88.0/24"`, ``))
	alice.send(t, udp4(alice.addr, "192.168.88.10", 5000, 9))  // now outside policy
	alice.send(t, udp4(alice.addr, "192.168.77.10", 5000, 53)) // still allowed
	waitFor(t, func() bool { st, _ := h.sessionOf("alice"); return st.Dropped.Policy == 1 && len(h.tun.packets()) == 1 })
	if p := h.tun.packets()[0]; netip.AddrFrom4([4]byte(p[16:20])).String() != "192.168.77.10" {
		t.Fatalf("the cut destination got through: %v", p[16:20])
	}

	// Revocation reaches the live session.
	h.writeCRL(2, time.Now().Add(time.Hour), serialOf(t, bobCert))
	h.reload("crl = \"crl.pem\"\n" + engPolicyTOML)
	bob.wantClose(t, tunnel.ReasonRevoked)

	// client_ca replaced by another CA: alice's chain no longer verifies.
	other := newTestCA(t, "Other CA")
	writePEM(t, filepath.Join(h.dir(), "ca.crt"), "CERTIFICATE", other.cert.Raw)
	h.reload(engPolicyTOML)
	alice.wantClose(t, tunnel.ReasonUnknownCA)
	waitFor(t, func() bool { return len(h.s.Status().Sessions) == 0 })
	h.close()
	alice.tc.Close()
	bob.tc.Close()
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
}

// TestSessionEndsAtNotAfter: a session lives no longer than its
// certificate.
func TestSessionEndsAtNotAfter(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	c, key := h.ca.sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "alice", OrganizationalUnit: []string{"eng"}},
		NotAfter: time.Now().Add(1500 * time.Millisecond), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage: x509.KeyUsageDigitalSignature})
	d := h.connect(tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key})
	d.wantClose(t, tunnel.ReasonExpired)
	d.tc.Close()
}

// TestPoolExhaustedTold: a device that finds no free address is told so.
func TestPoolExhaustedTold(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	h.s.pool = newAddrPools(newAddrPool(netip.MustParsePrefix("10.9.0.0/30")), nil) // one device address
	a := h.connect(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	defer a.tc.Close()
	d := h.dial(h.ca.leafWithKey(t, "bob", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	defer d.tc.Close()
	if err := d.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion}); err != nil {
		t.Fatal(err)
	}
	d.wantClose(t, tunnel.ReasonPoolExhausted)
}

// TestStaleCRLRefusesNewSessions: past nextUpdate new devices are refused
// (and told), live ones stay; "warn" admits.
func TestStaleCRLRefusesNewSessions(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	alice := h.connect(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	defer alice.tc.Close()
	h.writeCRL(2, time.Now().Add(-time.Minute))
	h.reload("crl = \"crl.pem\"\n" + engPolicyTOML)
	h.dial(h.ca.leafWithKey(t, "bob", []string{"eng"}, x509.ExtKeyUsageClientAuth)).wantClose(t, tunnel.ReasonCRLStale)
	if st := h.s.Status(); !st.CRLStale || st.CRLNumber != "2" {
		t.Fatalf("status: crl_stale %v, crl_number %q", st.CRLStale, st.CRLNumber)
	}
	if _, live := h.sessionOf("alice"); !live {
		t.Fatal("a stale CRL cut a live session")
	}
	h.reload("crl = \"crl.pem\"\ncrl_stale = \"warn\"\n" + engPolicyTOML)
	carol := h.connect(h.ca.leafWithKey(t, "carol", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	carol.tc.Close()
}

func TestRefusalLogRateLimit(t *testing.T) {
	var l refusalLog
	now := time.Now()
	logged := 0
	for i := 0; i < 1000; i++ {
		if l.note(now.Add(time.Duration(i)*time.Millisecond), string(tunnel.ReasonUnknownCA)) {
			logged++
		}
	}
	if logged != refusalLogBurst {
		t.Fatalf("%d of 1000 refusals in one second logged, want %d", logged, refusalLogBurst)
	}
	var out strings.Builder
	l.flush(now.Add(refusalLogWindow+time.Second), slogTo(&out))
	if !strings.Contains(out.String(), fmt.Sprintf("not_logged=%d", 1000-refusalLogBurst)) {
		t.Fatalf("summary line: %q", out.String())
	}
	if !l.note(now.Add(refusalLogWindow+2*time.Second), string(tunnel.ReasonRevoked)) {
		t.Fatal("a refusal in the next window was not logged")
	}
	if c := l.counts(); c[string(tunnel.ReasonUnknownCA)] != 1000 || c[string(tunnel.ReasonRevoked)] != 1 {
		t.Fatalf("counts %v", c)
	}
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// TestResumedHandshakeDecided: a device that kept a TLS session ticket
// from before its revocation resumes the session (no certificate is sent on
// resumption) and must still be refused: the decision runs on resumed
// handshakes too.
func TestResumedHandshakeDecided(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	cert := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	cache := tls.NewLRUClientSessionCache(4)
	conf := h.s.tlsConfig() // one listener config, as routineAccept has: its ticket keys
	dial := func() (*device, bool) {
		cli, srv := h.tcpPair()
		h.conns.Add(1)
		go func() { defer h.conns.Done(); h.s.handshake(context.Background(), srv, conf) }()
		tc := tls.Client(cli, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: h.gwPool, ServerName: "gw.test", NextProtos: []string{tunnel.ALPN},
			ClientSessionCache: cache, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		return &device{tc: tc, w: tunnel.NewWriter(tc, 0), r: tunnel.NewReader(tc, 0)}, tc.ConnectionState().DidResume
	}
	first, _ := dial()
	if err := first.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion}); err != nil {
		t.Fatal(err)
	}
	if typ, _, ok := first.next(5 * time.Second); !ok || typ != tunnel.FrameConfig { // the ticket arrives with it
		t.Fatalf("first session: frame %#x", typ)
	}
	first.tc.Close()

	h.writeCRL(2, time.Now().Add(time.Hour), serialOf(t, cert))
	h.reload("crl = \"crl.pem\"\n" + engPolicyTOML)
	again, resumed := dial()
	defer again.tc.Close()
	if !resumed {
		t.Fatal("the second handshake did not resume: the test proves nothing")
	}
	again.wantClose(t, tunnel.ReasonRevoked)
}
