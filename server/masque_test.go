package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	connectip "github.com/quic-go/connect-ip-go"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/yosida95/uritemplate/v3"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/masque"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// startQUIC serves the harness's gateway on a loopback UDP port.
func (h *gatewayHarness) startQUIC() string {
	h.t.Helper()
	h.s.config().Listen = "127.0.0.1:0"
	q, err := h.s.startQUIC(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	h.s.quic = q
	h.t.Cleanup(func() {
		h.s.closeAll(tunnel.ReasonShutdown)
		q.close()
	})
	return q.udp.LocalAddr().String()
}

// dialConnectIP is a plain CONNECT-IP client (connect-ip-go's own, not
// sallyport's) presenting cert (none if nil).
func (h *gatewayHarness) dialConnectIP(addr string, cert *tls.Certificate) (*connectip.Conn, error) {
	tc := &tls.Config{RootCAs: h.gwPool, ServerName: "gw.test", NextProtos: []string{masque.ALPN}}
	if cert != nil { // whatever CAs the gateway names, like the laptop
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	tr := &connectip.Transport{TLSClientConfig: tc, QUICConfig: &quic.Config{EnableDatagrams: true, InitialPacketSize: quicPacketSize}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := connectip.NewRequest(ctx, uritemplate.MustNew("https://"+addr+masque.Path))
	if err != nil {
		return nil, err
	}
	c, _, err := tr.Dial(req)
	return c, err
}

// connectIPSession connects connect-ip-go's client with a fresh eng
// device certificate for alice-laptop and waits for its address and the
// advertised routes (connect-ip-go sends only into those).
func (h *gatewayHarness) connectIPSession(addr string) (*connectip.Conn, netip.Addr, []connectip.IPRoute, tls.Certificate) {
	t := h.t
	t.Helper()
	cert := h.ca.leafWithKey(t, "alice-laptop", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	c, err := h.dialConnectIP(addr, &cert)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	assigned, err := c.ReceiveAddressAssignment(ctx)
	if err != nil || len(assigned) != 1 || assigned[0].IPPrefix.Bits() != 32 {
		t.Fatalf("address assignment %v: %v", assigned, err)
	}
	routes, err := c.Routes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := h.sessionOf("alice-laptop"); return ok })
	return c, assigned[0].IPPrefix.Addr(), routes, cert
}

// TestQUICRefusesWithoutTrust: the HTTP/3 listener must not be an open
// door. A client without a certificate, with one from another CA, one
// whose policy matches nothing or one that is revoked gets no HTTP/3 at
// all: the QUIC handshake fails, no session is made, and the refusal is
// counted by reason.
func TestQUICRefusesWithoutTrust(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	revoked := h.ca.leafWithKey(t, "stolen-laptop", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	h.writeCRL(1, time.Now().Add(time.Hour), serialOf(t, revoked))
	h.reload("crl = \"crl.pem\"\n" + engPolicyTOML)
	addr := h.startQUIC()
	other := newTestCA(t, "Other CA").leafWithKey(t, "alice-laptop", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	nopolicy := h.ca.leafWithKey(t, "bob-laptop", []string{"sales"}, x509.ExtKeyUsageClientAuth)
	for _, tc := range []struct {
		name   string
		cert   *tls.Certificate
		reason tunnel.Reason
	}{
		{"no certificate", nil, tunnel.ReasonNoCert},
		{"other CA", &other, tunnel.ReasonUnknownCA},
		{"no policy", &nopolicy, tunnel.ReasonNoPolicy},
		{"revoked", &revoked, tunnel.ReasonRevoked},
	} {
		before := h.s.refusals.counts()[string(tc.reason)]
		c, err := h.dialConnectIP(addr, tc.cert)
		if err == nil {
			c.Close()
			t.Fatalf("%s: CONNECT-IP succeeded", tc.name)
		}
		if _, ok := errors.AsType[*quic.TransportError](err); !ok {
			t.Errorf("%s: %v, want the QUIC handshake refused", tc.name, err)
		}
		if got := h.s.refusals.counts()[string(tc.reason)]; got != before+1 {
			t.Errorf("%s: refusals %q = %d, want %d", tc.name, tc.reason, got, before+1)
		}
	}
	if n := len(h.s.sessions()); n != 0 {
		t.Fatalf("%d sessions after refused handshakes", n)
	}
}

// TestQUICSessionRelay: connect-ip-go's client gets its address and the
// policy's routes in capsules, its packets reach the TUN through the same
// filter as the TLS stream's (a spoofed source is dropped and counted),
// replies come back as datagrams, and status names the path.
func TestQUICSessionRelay(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	c, me, routes, _ := h.connectIPSession(h.startQUIC())
	if len(routes) != 2 {
		t.Fatalf("routes %v, want the policy's two", routes)
	}
	st, _ := h.sessionOf("alice-laptop")
	if st.Path != pathQUIC || st.Address != me.String() {
		t.Fatalf("status %+v, want path quic and address %s", st, me)
	}

	out := csum4(udp4(me.String(), "192.168.88.5", 4000, 53))
	if _, err := c.WritePacket(out); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(h.tun.packets()) == 1 })
	var info packet.Info
	if err := packet.Parse(h.tun.packets()[0], &info); err != nil || info.Src != me || info.DstPort != 53 {
		t.Fatalf("TUN got %+v (%v)", info, err)
	}

	// A reply from the LAN comes back as a datagram.
	h.tun.in <- csum4(udp4("192.168.88.5", me.String(), 53, 4000))
	buf := make([]byte, 2000)
	n, err := readPacket(c, buf)
	if err != nil || n != len(out) {
		t.Fatalf("reply: %d bytes, %v", n, err)
	}

	// connect-ip-go checks our source itself; a spoofing client would not,
	// so hand the gateway one through the session's own link.
	ss := h.s.sessions()[0]
	b := tunnel.NewBatch(1, tunnel.Headroom+64)
	b.Sizes[0] = copy(b.Bufs[0][tunnel.Headroom:], udp4("10.8.0.99", "192.168.88.5", 4000, 53))
	ss.received(ss.inbound(nil).Deliver(b, 1, time.Now(), 0))
	if got := ss.drops.Load(tunnel.DropSpoofed); got != 1 {
		t.Fatalf("spoofed drops = %d, want 1", got)
	}
}

// readPacket reads one packet within 5 s.
func readPacket(c *connectip.Conn, buf []byte) (int, error) {
	type res struct {
		n   int
		err error
	}
	ch := make(chan res, 1)
	go func() { n, err := c.ReadPacket(buf); ch <- res{n, err} }()
	select {
	case r := <-ch:
		return r.n, r.err
	case <-time.After(5 * time.Second):
		return 0, errors.New("no packet within 5 s")
	}
}

// TestQUICRevocationCutsSession: a reload that revokes the device ends
// its datagram session at once, like a TLS one.
func TestQUICRevocationCutsSession(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	c, _, _, cert := h.connectIPSession(h.startQUIC())
	h.writeCRL(1, time.Now().Add(time.Hour), serialOf(t, cert))
	h.reload("crl = \"crl.pem\"\n" + engPolicyTOML)
	if _, ok := h.sessionOf("alice-laptop"); ok {
		t.Fatal("revoked device still has a session after the reload")
	}
	if _, err := readPacket(c, make([]byte, 2000)); err == nil || strings.Contains(err.Error(), "within") {
		t.Fatalf("read after revocation: %v, want the connection closed", err)
	}
}

// TestQUICTooBig: a packet from the LAN larger than the device's datagram
// path takes is answered with ICMP Fragmentation Needed (next-hop MTU the
// path's) to its sender, written to the TUN, and not sent.
func TestQUICTooBig(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	c, me, _, _ := h.connectIPSession(h.startQUIC())
	if _, err := c.WritePacket(csum4(udp4(me.String(), "192.168.88.5", 4000, 53))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(h.tun.packets()) == 1 })
	big := bigUDP4("192.168.88.5", me.String(), 53, 4000, 1500)
	h.tun.in <- big
	waitFor(t, func() bool { return len(h.tun.packets()) == 2 })
	e := h.tun.packets()[1]
	var info packet.Info
	if err := packet.Parse(e, &info); err != nil || info.Proto != packet.ProtoICMP || info.ICMPType != 3 || e[21] != 4 {
		t.Fatalf("TUN got %+v (%v), want ICMP fragmentation needed", info, err)
	}
	if info.Src != netip.MustParseAddr("10.8.0.1") || info.Dst != netip.MustParseAddr("192.168.88.5") {
		t.Fatalf("error %s -> %s, want 10.8.0.1 -> 192.168.88.5", info.Src, info.Dst)
	}
	mtu := int(binary.BigEndian.Uint16(e[26:28]))
	if mtu < 1280 || mtu >= 1500 {
		t.Fatalf("next-hop MTU %d, want the datagram path's (1280..1499)", mtu)
	}
	// A packet that fits still goes through.
	h.tun.in <- bigUDP4("192.168.88.5", me.String(), 53, 4000, mtu)
	if n, err := readPacket(c, make([]byte, 2000)); err != nil || n != mtu {
		t.Fatalf("packet of the path's MTU: %d bytes, %v", n, err)
	}
}

// bigUDP4 is a UDP/IPv4 packet of size bytes with Don't Fragment set.
func bigUDP4(src, dst string, sport, dport uint16, size int) []byte {
	p := ipv4(17, src, dst, make([]byte, size-20))
	p[6] = 0x40
	csum4(p)
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	binary.BigEndian.PutUint16(p[24:], uint16(size-20))
	return p
}

// csum4 fills in p's IPv4 header checksum (connect-ip-go checks it).
func csum4(p []byte) []byte {
	binary.BigEndian.PutUint16(p[10:12], 0)
	binary.BigEndian.PutUint16(p[10:12], ipChecksum(p[:20]))
	return p
}

func ipChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func testLogOut() io.Writer {
	if os.Getenv("SALLYPORT_TEST_LOG") != "" {
		return os.Stderr
	}
	return io.Discard
}

// TestQUICRenewal: a sallyport laptop on the datagram path renews its
// certificate inside the session like one on the TLS stream: renewal is
// offered in the config capsule, the request is bound to the QUIC
// connection's TLS (a request bound to another connection is refused),
// and the session moves to the new certificate.
func TestQUICRenewal(t *testing.T) {
	h := newRenewalHarness(t, "")
	addr := h.startQUIC()
	enroll := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	qc, link, pc := h.sallyportQUIC(addr, enroll, tunnel.CapPush, tunnel.CapRenew)
	defer qc.CloseWithError(0, "")
	if !tunnel.HasCap(pc.Caps, tunnel.CapRenew) || tunnel.HasCap(pc.Caps, tunnel.CapGSO) {
		t.Fatalf("config caps %v, want renew offered and never gso", pc.Caps)
	}
	renewQUIC := func(binding []byte) tunnel.RenewReply {
		b, err := tunnel.EncodeRenewRequest(tunnel.RenewRequest{CSR: request(t, newP256(t), binding)})
		if err != nil {
			t.Fatal(err)
		}
		if err := link.WriteControl(tunnel.FrameRenew, b); err != nil {
			t.Fatal(err)
		}
		for {
			typ, v, err := link.NextCapsule()
			if err != nil {
				t.Fatalf("waiting for the renewal answer: %v", err)
			}
			if typ != masque.CapsuleSallyport {
				continue
			}
			ft, payload, err := masque.ParseFrame(v)
			if err != nil || ft != tunnel.FrameRenewed {
				t.Fatalf("frame %#x (%v), want renewed", ft, err)
			}
			r, err := tunnel.DecodeRenewReply(payload)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
	}
	if r := renewQUIC(make([]byte, 32)); r.Reason == "" {
		t.Fatal("a request bound to another connection was renewed")
	}
	binding, err := pki.RenewalBinding(qc.ConnectionState().TLS)
	if err != nil {
		t.Fatal(err)
	}
	r := renewQUIC(binding)
	if r.Reason != "" || len(r.Certs) != 2 {
		t.Fatalf("answer: reason %q, %d certs", r.Reason, len(r.Certs))
	}
	id := pki.IdentityOf(parseChain(t, r.Certs)[0])
	st, _ := h.sessionOf("alice")
	if st.Path != pathQUIC || st.Serial != id.Serial || st.Renewals != 1 {
		t.Fatalf("status after renewal %+v, want path quic, serial %s", st, id.Serial)
	}
}

// sallyportQUIC is a sallyport laptop's side of the datagram path, by
// hand: the QUIC handshake with cert, the CONNECT-IP request with a hello
// offering caps, and the capsules up to the config.
func (h *gatewayHarness) sallyportQUIC(addr string, cert tls.Certificate, caps ...string) (*quic.Conn, *masque.Link, tunnel.Config) {
	t := h.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tc := &tls.Config{RootCAs: h.gwPool, ServerName: "gw.test", NextProtos: []string{masque.ALPN},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }}
	qc, err := quic.DialAddr(ctx, addr, tc, &quic.Config{EnableDatagrams: true, InitialPacketSize: quicPacketSize})
	if err != nil {
		t.Fatal(err)
	}
	cc := (&http3.Transport{EnableDatagrams: true}).NewClientConn(qc)
	<-cc.ReceivedSettings()
	rs, err := cc.OpenRequestStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hello, _ := tunnel.EncodeHello(tunnel.Hello{Version: tunnel.ProtocolVersion, Caps: caps, Software: "test"})
	u := &url.URL{Scheme: "https", Host: addr, Path: masque.Path}
	req := (&http.Request{Method: http.MethodConnect, Proto: masque.Protocol, Host: addr, URL: u,
		Header: http.Header{http3.CapsuleProtocolHeader: {"?1"}, masque.HelloHeader: {string(hello)}}}).WithContext(ctx)
	if err := rs.SendRequestHeader(req); err != nil {
		t.Fatal(err)
	}
	resp, err := rs.ReadResponse()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT-IP: %v %v", resp, err)
	}
	link := masque.NewLink(rs)
	link.Direct(qc, rs.StreamID())
	for {
		typ, v, err := link.NextCapsule()
		if err != nil {
			t.Fatal(err)
		}
		if typ != masque.CapsuleSallyport {
			continue
		}
		ft, payload, err := masque.ParseFrame(v)
		if err != nil || ft != tunnel.FrameConfig {
			t.Fatalf("first frame %#x (%v), want config", ft, err)
		}
		pc, err := tunnel.DecodeConfig(payload)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { st, ok := h.sessionOf("alice"); return ok && st.Path == pathQUIC })
		return qc, link, pc
	}
}

// garbageInitials sends n made-up QUIC Initial packets to addr (a valid
// long header with fresh connection IDs, 1,200 bytes of nothing
// decryptable) from c: what quic-go would make a connection for each.
func garbageInitials(t *testing.T, c *net.UDPConn, addr string, n int) {
	t.Helper()
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	pkt := make([]byte, 1200)
	for range n {
		_, _ = rand.Read(pkt)
		pkt[0] = 0xc3                               // long header, fixed bit, Initial
		pkt[1], pkt[2], pkt[3], pkt[4] = 0, 0, 0, 1 // QUIC v1
		pkt[5], pkt[14], pkt[23] = 8, 8, 0          // DCID and SCID of 8 bytes, no token
		rest := len(pkt) - 26
		pkt[24], pkt[25] = 0x40|byte(rest>>8), byte(rest)
		if _, err := c.WriteToUDP(pkt, to); err != nil {
			t.Fatal(err)
		}
	}
}

// TestQUICHandshakeLimits (review of issue 17): a flood of made-up QUIC
// Initials costs the gateway no state past a quarter of its handshake
// slots (every further one is answered with a stateless Retry), QUIC
// handshakes hold slots of their own under tls.max_handshakes and the
// per-source cap (past them: CONNECTION_REFUSED, counted), and a laptop
// gets in through the Retry and once the slots come back.
func TestQUICHandshakeLimits(t *testing.T) {
	h := newGatewayHarnessWith(t, engPolicy, netip.Prefix{}, nil, func(c *Config) {
		c.TLS.MaxHandshakes, c.TLS.MaxHandshakesPerSource = 8, 4
		c.TLS.HandshakeTimeout = 2 * time.Second // how long a silent QUIC handshake holds its slot
	})
	defer h.close()
	addr := h.startQUIC()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const flood = 100
	garbageInitials(t, c, addr, flood)
	// quic-go answers with a Retry as fast as it can and drops the rest:
	// either way no state.
	buf := make([]byte, 2048)
	for {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no Retry for %d made-up Initials: %v", flood, err)
		}
		if n > 0 && buf[0]&0xf0 == 0xf0 { // long header, type Retry
			break
		}
	}
	garbageInitials(t, c, addr, flood) // more, after the first Retry: still none admitted
	time.Sleep(100 * time.Millisecond)
	if i, _, _, _ := h.s.qshakes.counts(); i != 2 {
		t.Fatalf("%d QUIC handshakes in flight after %d made-up Initials, want 2 (a quarter of 8; the rest got a Retry or were dropped)", i, 2*flood)
	}

	// A laptop answers the Retry and takes a slot.
	cert := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	qc, _, _ := h.sallyportQUIC(addr, cert)
	if i, _, _, _ := h.s.qshakes.counts(); i != 2 { // its handshake is done: a session holds no slot
		t.Fatalf("%d QUIC handshakes in flight with the laptop's session live, want the flood's 2", i)
	}
	qc.CloseWithError(0, "")

	// Its source at its share: refused before any handshake, and counted.
	cfg := *h.s.config()
	cfg.TLS.MaxHandshakesPerSource = 2
	h.s.setConfig(&cfg)
	tc := &tls.Config{RootCAs: h.gwPool, ServerName: "gw.test", NextProtos: []string{masque.ALPN}, Certificates: []tls.Certificate{cert}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if conn, err := quic.DialAddr(ctx, addr, tc, &quic.Config{InitialPacketSize: quicPacketSize}); err == nil {
		conn.CloseWithError(0, "")
		t.Fatal("a QUIC handshake over tls.max_handshakes_per_source was admitted")
	} else if te, ok := errors.AsType[*quic.TransportError](err); !ok || te.ErrorCode != quic.ConnectionRefused {
		t.Fatalf("over the per-source cap: %v, want CONNECTION_REFUSED", err)
	}
	if n := h.refused(tunnel.ReasonPerSource); n < 1 { // one per Initial the client sent
		t.Fatalf("%d refusals counted as per-source-limit, want the refused handshake's", n)
	}
	// The flood's two handshakes time out and give their slots back.
	waitFor(t, func() bool { i, _, _, _ := h.s.qshakes.counts(); return i == 0 })
}
