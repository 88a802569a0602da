package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// TestMaxSessions: at tunnel.max_sessions a new device is told "capacity"
// (before any config) and gets no session; a device replacing its own
// session still gets in; a freed slot admits the next device; devices
// connecting at once never push the count past the limit.
func TestMaxSessions(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	cfg := *h.s.config()
	cfg.Tunnel.MaxSessions = 2
	h.s.setConfig(&cfg)
	leaf := func(cn string) tls.Certificate {
		return h.ca.leafWithKey(t, cn, []string{"eng"}, x509.ExtKeyUsageClientAuth)
	}
	alice := h.connect(leaf("alice"))
	defer alice.tc.Close()
	bob := h.connect(leaf("bob"))
	defer bob.tc.Close()

	carolCert := leaf("carol")
	carol := h.dial(carolCert)
	defer carol.tc.Close()
	if err := carol.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion}); err != nil {
		t.Fatal(err)
	}
	carol.wantClose(t, tunnel.ReasonCapacity) // the first frame: no config before it
	if _, live := h.sessionOf("carol"); live {
		t.Fatal("a device over max_sessions got a session")
	}

	alice2 := h.connect(leaf("alice")) // replaces alice's own session: allowed at the limit
	defer alice2.tc.Close()
	if n := len(h.s.Status().Sessions); n != 2 {
		t.Fatalf("%d sessions after alice reconnected, want 2", n)
	}

	bob.tc.Close()
	waitFor(t, func() bool { _, live := h.sessionOf("bob"); return !live })
	carol2 := h.connect(carolCert)
	defer carol2.tc.Close()

	// A burst: the limit holds however the handshakes interleave (register
	// checks again under the lock that inserts).
	alice2.tc.Close()
	carol2.tc.Close()
	waitFor(t, func() bool { return len(h.s.Status().Sessions) == 0 })
	var wg sync.WaitGroup
	devs := make([]*device, 6)
	for i := range devs {
		devs[i] = h.dial(leaf(fmt.Sprintf("burst%d", i)))
		defer devs[i].tc.Close()
	}
	for _, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = d.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion})
		}()
	}
	wg.Wait()
	refused := 0
	for _, d := range devs {
		// Refused early: Close first. Refused by register (it raced
		// another device past the early check): its config, then Close.
		for range 2 {
			typ, payload, ok := d.next(time.Second)
			if m, _ := tunnel.DecodeClose(payload); ok && typ == tunnel.FrameClose && m.Reason == string(tunnel.ReasonCapacity) {
				refused++
			}
			if !ok || typ != tunnel.FrameConfig {
				break
			}
		}
	}
	if n := len(h.s.Status().Sessions); n > 2 || refused != len(devs)-n {
		t.Fatalf("burst of %d devices at max_sessions 2: %d sessions, %d told capacity", len(devs), n, refused)
	}
}

// TestMaxHandshakes: past tls.max_handshakes in flight, the accept loop
// closes a new connection before TLS and counts it; a slot frees when a
// handshake ends.
func TestMaxHandshakes(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	cfg := *h.s.config()
	cfg.TLS.MaxHandshakes = 1
	h.s.setConfig(&cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.s.ln = ln
	ctx, cancel := context.WithCancel(context.Background())
	h.s.wg.Add(1)
	go h.s.routineAccept(ctx)
	defer func() { cancel(); ln.Close() }()

	// A connection that never says hello holds the one slot.
	hog, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { h.s.sessMu.Lock(); defer h.s.sessMu.Unlock(); return h.s.shaking == 1 })

	over, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	_ = over.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := over.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("connection over the cap: read %d bytes, %v; want it closed before TLS (EOF)", n, err)
	}
	if n := h.s.refusals.counts()[string(tunnel.ReasonOverload)]; n != 1 {
		t.Fatalf("%d refusals counted as %s, want 1", n, tunnel.ReasonOverload)
	}

	hog.Close() // its handshake fails and frees the slot
	waitFor(t, func() bool { h.s.sessMu.Lock(); defer h.s.sessMu.Unlock(); return h.s.shaking == 0 })
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cert := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	tc := tls.Client(raw, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: h.gwPool, ServerName: "gw.test",
		Certificates: []tls.Certificate{cert}, NextProtos: []string{tunnel.ALPN}})
	defer tc.Close()
	d := &device{tc: tc, w: tunnel.NewWriter(tc, 0), r: tunnel.NewReader(tc, 0)}
	if err := d.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion}); err != nil {
		t.Fatal(err)
	}
	if typ, _, ok := d.next(5 * time.Second); !ok || typ != tunnel.FrameConfig {
		t.Fatalf("after the slot freed: frame %#x (ok %v), want config", typ, ok)
	}
}
