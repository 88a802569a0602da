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

// acceptHarness serves the harness's gateway on a loopback listener
// through the real accept loop (slots, eviction, deadlines) with the TLS
// limits changed by tweak.
func acceptHarness(t *testing.T, tweak func(*TLSConfig)) (*gatewayHarness, string) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	cfg := *h.s.config()
	tweak(&cfg.TLS)
	h.s.setConfig(&cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.s.ln = ln
	ctx, cancel := context.WithCancel(context.Background())
	h.s.wg.Add(1)
	go h.s.routineAccept(ctx)
	t.Cleanup(func() { cancel(); ln.Close(); h.close() })
	return h, ln.Addr().String()
}

// dialFrom opens a TCP connection to addr from local address from
// (127.0.0.x: every loopback address is usable on Linux).
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// blockingConn stops a TLS client after its ClientHello: its reads wait
// until the connection is closed, so it never answers the server.
type blockingConn struct {
	net.Conn
	done chan struct{}
}

func (c *blockingConn) Read([]byte) (int, error) { <-c.done; return 0, net.ErrClosed }

// stallAfterHello sends a complete ClientHello on c and then nothing: a
// connection past its ClientHello that holds its slot until
// tls.handshake_timeout.
func stallAfterHello(t *testing.T, c net.Conn) {
	t.Helper()
	bc := &blockingConn{Conn: c, done: make(chan struct{})}
	t.Cleanup(func() { close(bc.done) })
	go tls.Client(bc, &tls.Config{MinVersion: tls.VersionTLS13, ServerName: "gw.test", InsecureSkipVerify: true}).Handshake() //nolint:gosec // never completes
}

// deviceOn runs a valid device through the accept loop from local address
// from and reports whether it got its config.
func (h *gatewayHarness) deviceOn(t *testing.T, from, addr, cn string) bool {
	t.Helper()
	_, ok := h.deviceConn(t, from, addr, cn)
	return ok
}

// deviceConn is deviceOn, returning the device's connection too.
func (h *gatewayHarness) deviceConn(t *testing.T, from, addr, cn string) (*tls.Conn, bool) {
	t.Helper()
	raw := dialFrom(t, from, addr)
	cert := h.ca.leafWithKey(t, cn, []string{"eng"}, x509.ExtKeyUsageClientAuth)
	tc := tls.Client(raw, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: h.gwPool, ServerName: "gw.test",
		Certificates: []tls.Certificate{cert}, NextProtos: []string{tunnel.ALPN}})
	t.Cleanup(func() { tc.Close() })
	d := &device{tc: tc, w: tunnel.NewWriter(tc, 0), r: tunnel.NewReader(tc, 0)}
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := d.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion}); err != nil {
		return tc, false
	}
	typ, _, ok := d.next(10 * time.Second)
	return tc, ok && typ == tunnel.FrameConfig
}

// closedBeforeTLS reports whether the gateway closed c without a byte.
func closedBeforeTLS(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 1))
	return n == 0 && err == io.EOF
}

func (h *gatewayHarness) refused(r tunnel.Reason) uint64 { return h.s.refusals.counts()[string(r)] }

func (h *gatewayHarness) slots() (inFlight, waiting int) {
	i, w, _, _ := h.s.shakes.counts()
	return i, w
}

// TestEvictWaitingForHello: with every slot held by connections that have
// not sent their ClientHello (silent, or dripping one byte), a valid
// device is not refused: the oldest waiting connection is closed for it
// and counted as evicted.
func TestEvictWaitingForHello(t *testing.T) {
	h, addr := acceptHarness(t, func(c *TLSConfig) { c.MaxHandshakes = 2 })
	silent := dialFrom(t, "127.0.0.2", addr)
	waitFor(t, func() bool { i, _ := h.slots(); return i == 1 })
	drip := dialFrom(t, "127.0.0.3", addr)
	if _, err := drip.Write([]byte{0x16}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { i, w := h.slots(); return i == 2 && w == 2 })
	if !h.deviceOn(t, "127.0.0.1", addr, "alice") {
		t.Fatal("a valid device was kept out by two connections that never sent a ClientHello")
	}
	if !closedBeforeTLS(silent) {
		t.Fatal("the oldest waiting connection (silent) was not the one closed")
	}
	if n := h.refused(tunnel.ReasonEvicted); n != 1 {
		t.Fatalf("%d connections counted as evicted, want 1", n)
	}
	// Full again (the dripping one and a new silent one): the next
	// newcomer evicts the dripping one, now the oldest.
	waitFor(t, func() bool { i, w := h.slots(); return i == 1 && w == 1 }) // alice's slot is back
	silent2 := dialFrom(t, "127.0.0.4", addr)
	waitFor(t, func() bool { i, w := h.slots(); return i == 2 && w == 2 })
	if !h.deviceOn(t, "127.0.0.1", addr, "bob") || !closedBeforeTLS(drip) {
		t.Fatal("the second device did not get the dripping connection's slot")
	}
	waitFor(t, func() bool { return h.refused(tunnel.ReasonEvicted) == 2 })
	waitFor(t, func() bool { i, w := h.slots(); return i == 1 && w == 1 }) // silent2 alone
	_ = silent2
}

// TestPastHelloNotEvicted: a connection that has sent its whole
// ClientHello keeps its slot: with every slot past it, a newcomer is
// closed before TLS (handshakes-full), and at its source's share
// (per-source-limit) while another source still gets in.
func TestPastHelloNotEvicted(t *testing.T) {
	h, addr := acceptHarness(t, func(c *TLSConfig) { c.MaxHandshakes = 2; c.MaxHandshakesPerSource = 1 })
	stallAfterHello(t, dialFrom(t, "127.0.0.2", addr))
	waitFor(t, func() bool { i, w := h.slots(); return i == 1 && w == 0 })
	if over := dialFrom(t, "127.0.0.2", addr); !closedBeforeTLS(over) {
		t.Fatal("a second connection from a source at its share was admitted")
	}
	if n := h.refused(tunnel.ReasonPerSource); n != 1 {
		t.Fatalf("%d refusals counted as per-source-limit, want 1", n)
	}
	stallAfterHello(t, dialFrom(t, "127.0.0.3", addr))
	waitFor(t, func() bool { i, w := h.slots(); return i == 2 && w == 0 })
	if over := dialFrom(t, "127.0.0.4", addr); !closedBeforeTLS(over) {
		t.Fatal("a connection over tls.max_handshakes was admitted though no slot could be evicted")
	}
	if n := h.refused(tunnel.ReasonOverload); n != 1 {
		t.Fatalf("%d refusals counted as handshakes-full, want 1", n)
	}
}

// TestStalledAfterHelloShared: connections that send a whole ClientHello
// and then nothing (a canned ClientHello costs the attacker nothing) from
// one address hold every slot; a valid device from another address still
// gets in: the flooding address's oldest is evicted (after its
// ClientHello, counted as evicted), and the device, alone on its address,
// keeps its slot against the next newcomer of the flood.
func TestStalledAfterHelloShared(t *testing.T) {
	h, addr := acceptHarness(t, func(c *TLSConfig) { c.MaxHandshakes = 3; c.MaxHandshakesPerSource = 8 })
	first := dialFrom(t, "127.0.0.2", addr)
	stallAfterHello(t, first)
	waitFor(t, func() bool { i, w := h.slots(); return i == 1 && w == 0 })
	for range 2 {
		stallAfterHello(t, dialFrom(t, "127.0.0.2", addr))
	}
	waitFor(t, func() bool { i, w := h.slots(); return i == 3 && w == 0 })
	if !h.deviceOn(t, "127.0.0.1", addr, "alice") {
		t.Fatal("three stalled connections from one address kept a valid device out")
	}
	if !closedBeforeEOF(first) {
		t.Fatal("the oldest stalled connection was not the one closed")
	}
	waitFor(t, func() bool { return h.refused(tunnel.ReasonEvicted) == 1 })
}

// TestProvenNotEvicted: once its certificate is checked a connection is
// no stranger: while it waits for its session (here, the duplicate-device
// probe of the device's live session, which does not answer), a newcomer
// from a lighter network evicts a stalled stranger of the same address,
// never the authenticated one, though it is older.
func TestProvenNotEvicted(t *testing.T) {
	h, addr := acceptHarness(t, func(c *TLSConfig) { c.MaxHandshakes = 2; c.MaxHandshakesPerSource = 8 })
	h.s.probeTimeout = time.Minute // ends when the first session does
	first, ok := h.deviceConn(t, "127.0.0.1", addr, "alice")
	if !ok {
		t.Fatal("alice did not connect")
	}
	second := make(chan bool, 1)
	go func() { _, ok := h.deviceConn(t, "127.0.0.1", addr, "alice"); second <- ok }()
	// The second connection is past its certificate, waiting for the probe.
	waitFor(t, func() bool { i, _, u, _ := h.s.shakes.counts(); return i == 1 && u == 0 })
	stall := dialFrom(t, "127.0.0.1", addr)
	stallAfterHello(t, stall)
	waitFor(t, func() bool { i, _, u, _ := h.s.shakes.counts(); return i == 2 && u == 1 })
	if !h.deviceOn(t, "127.0.0.2", addr, "bob") {
		t.Fatal("bob was kept out")
	}
	if !closedBeforeEOF(stall) {
		t.Fatal("the stalled stranger was not the one evicted")
	}
	first.Close() // the probe ends unanswered: the second connection takes over
	if !<-second {
		t.Fatalf("alice's second connection got no session (refusals %v)", h.s.refusals.counts())
	}
	if n := h.refused(tunnel.ReasonEvicted); n != 1 {
		t.Fatalf("%d connections evicted, want only the stalled one (%v)", n, h.s.refusals.counts())
	}
}

// closedBeforeEOF reports whether the gateway closed c (whatever it sent
// first: a stalled connection has the gateway's flight waiting).
func closedBeforeEOF(c net.Conn) bool {
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c)
	return err == nil
}

// TestPreauthTimeouts: a silent connection is closed at
// tls.first_byte_timeout, one that sent a byte but not its whole
// ClientHello at tls.hello_timeout, each counted under its cause; the
// slots come back.
func TestPreauthTimeouts(t *testing.T) {
	h, addr := acceptHarness(t, func(c *TLSConfig) {
		c.FirstByteTimeout = 50 * time.Millisecond
		c.HelloTimeout = 100 * time.Millisecond
	})
	silent := dialFrom(t, "127.0.0.2", addr)
	drip := dialFrom(t, "127.0.0.3", addr)
	if _, err := drip.Write([]byte{0x16, 0x03}); err != nil {
		t.Fatal(err)
	}
	if !closedBeforeTLS(silent) {
		t.Fatal("the silent connection was not closed")
	}
	if !closedBeforeTLS(drip) {
		t.Fatal("the dripping connection was not closed")
	}
	waitFor(t, func() bool {
		return h.refused(tunnel.ReasonFirstByteTimeout) == 1 && h.refused(tunnel.ReasonHelloTimeout) == 1
	})
	waitFor(t, func() bool { i, _ := h.slots(); return i == 0 })
	if !h.deviceOn(t, "127.0.0.1", addr, "alice") {
		t.Fatal("a valid device did not get in after the timeouts")
	}
}

// helloRecords is a real ClientHello re-framed as TLS records of at most
// size bytes of payload each.
func helloRecords(t *testing.T, size int) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, &tls.Config{MinVersion: tls.VersionTLS13, ServerName: "gw.test", InsecureSkipVerify: true, NextProtos: []string{tunnel.ALPN}}).Handshake() //nolint:gosec // never completes
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(b, body); err != nil {
		t.Fatal(err)
	}
	var out []byte
	for len(body) > 0 {
		n := min(size, len(body))
		out = append(out, 0x16, 0x03, 0x01, byte(n>>8), byte(n))
		out = append(out, body[:n]...)
		body = body[n:]
	}
	return out
}

// TestPreauthMalformedHellos: what a stranger can put in its first bytes.
// A ClientHello split into one-byte records is a ClientHello (the slot
// moves past it); a record header that lies about its length, a record of
// the wrong type, a handshake message over crypto/tls's 64 KiB bound end
// the connection within the pre-authentication deadlines, each counted,
// and every slot comes back.
func TestPreauthMalformedHellos(t *testing.T) {
	h, addr := acceptHarness(t, func(c *TLSConfig) {
		c.FirstByteTimeout = 500 * time.Millisecond
		c.HelloTimeout = time.Second // room for 1,000 one-byte records on a loaded machine
		c.HandshakeTimeout = 1200 * time.Millisecond
	})
	huge := make([]byte, 5+16384) // a full record announcing a ClientHello of 65,537 bytes
	copy(huge, []byte{0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x01, 0x00, 0x01})
	for _, tc := range []struct {
		name   string
		bytes  []byte
		hello  bool // crypto/tls read a whole ClientHello
		reason tunnel.Reason
	}{
		{"one-byte records", helloRecords(t, 1), true, tunnel.ReasonHandshake},
		{"record longer than sent", []byte{0x16, 0x03, 0x01, 0x10, 0x00, 0x01}, false, tunnel.ReasonHelloTimeout},
		{"record over the TLS maximum", []byte{0x16, 0x03, 0x01, 0xff, 0xff}, false, tunnel.ReasonHandshake},
		{"application data first", []byte{0x17, 0x03, 0x03, 0x00, 0x01, 0x00}, false, tunnel.ReasonHandshake},
		{"handshake message over 64 KiB", huge, false, tunnel.ReasonHandshake},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := h.s.refusals.counts()
			c := dialFrom(t, "127.0.0.2", addr)
			if _, err := c.Write(tc.bytes); err != nil {
				t.Fatal(err)
			}
			if tc.hello {
				waitFor(t, func() bool { i, w := h.slots(); return i == 1 && w == 0 }) // past its ClientHello
			}
			if !closedBeforeEOF(c) {
				t.Fatal("the gateway did not close the connection")
			}
			waitFor(t, func() bool { i, _ := h.slots(); return i == 0 })
			after, total := h.s.refusals.counts(), 0
			for r, n := range after {
				total += int(n - before[r])
			}
			if total != 1 || after[string(tc.reason)] != before[string(tc.reason)]+1 {
				t.Fatalf("refusals %v -> %v, want one more %s", before, after, tc.reason)
			}
		})
	}
}
