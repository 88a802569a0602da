package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/procs"
	"github.com/sallyport/sallyport/internal/testenv"
	"github.com/sallyport/sallyport/server/policy"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// fakeTUN is a tunnel.Device in memory: packets written to it are
// recorded, packets sent on in come out of Read.
type fakeTUN struct {
	loop    netip.Prefix // packets written for this prefix come back out of Read, as the kernel routes them
	in      chan []byte
	mu      sync.Mutex
	written [][]byte
	closed  chan struct{}
	once    sync.Once
}

func newFakeTUN() *fakeTUN { return &fakeTUN{in: make(chan []byte, 16), closed: make(chan struct{})} }

func (f *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case p := <-f.in:
		sizes[0] = copy(bufs[0][offset:], p)
		return 1, nil
	case <-f.closed:
		return 0, os.ErrClosed
	}
}

func (f *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range bufs {
		p := append([]byte(nil), b[offset:]...)
		f.written = append(f.written, p)
		if dst, ok := packet.Dst(p); ok && f.loop.Contains(dst) {
			f.in <- p
		}
	}
	return len(bufs), nil
}

func (f *fakeTUN) packets() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.written...)
}

func (f *fakeTUN) BatchSize() int { return 1 }
func (f *fakeTUN) Name() string   { return "fake0" }
func (f *fakeTUN) MTU() int       { return 1500 }
func (f *fakeTUN) Close() error   { f.once.Do(func() { close(f.closed) }); return nil }

// udp4 builds a UDP/IPv4 packet.
func udp4(src, dst string, sport, dport uint16) []byte {
	p := ipv4(17, src, dst, make([]byte, 8+4))
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	binary.BigEndian.PutUint16(p[24:], 12)
	return p
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// harnessTOML is a server.toml for the harness's files; extra follows the
// [tls] table (more tls keys, then other tables such as [[policy]]).
func harnessTOML(extra string) string {
	return "[tls]\ncert = \"gw.crt\"\nkey = \"gw.key\"\nclient_ca = \"ca.crt\"\n" + extra +
		"\n[tunnel]\nipv4_pool = \"10.8.0.0/24\"\n"
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// leafWithKey issues a certificate and returns it as a tls.Certificate.
func (ca *testCA) leafWithKey(t testing.TB, cn string, ous []string, eku x509.ExtKeyUsage, dns ...string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn, OrganizationalUnit: ous},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{eku}, KeyUsage: x509.KeyUsageDigitalSignature, DNSNames: dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestSessionRelay runs one device session over loopback TLS against a
// fake TUN: hello/config, the device->LAN filter (allowed, spoofed, outside
// policy), a reply let back by conntrack, an unsolicited packet refused, a
// kick with its reason, and no goroutine left.
func TestSessionRelay(t *testing.T) {
	before := runtime.NumGoroutine()
	h := newGatewayHarness(t, []policy.Policy{{Name: "eng", Match: policy.Match{OU: []string{"eng"}},
		Allow: []string{"192.168.77.0/24 udp/53"}}}, netip.Prefix{})
	d := h.connect(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	me := d.addr
	if me != "10.8.0.2" {
		t.Fatalf("device address %s", me)
	}
	s, tun := h.s, h.tun

	d.send(t, udp4(me, "192.168.77.10", 5000, 53))          // allowed
	d.send(t, udp4("10.8.0.99", "192.168.77.10", 5000, 53)) // spoofed
	d.send(t, udp4(me, "192.168.77.10", 5000, 80))          // outside policy
	waitFor(t, func() bool { st := s.Status(); return len(st.Sessions) == 1 && st.Sessions[0].Dropped.Policy == 1 })
	st := s.Status().Sessions[0]
	if got := tun.packets(); len(got) != 1 || st.Dropped.Spoofed != 1 || st.Device != "alice" {
		t.Fatalf("TUN got %d packets, status %+v", len(got), st)
	}

	// The DNS reply comes back; a packet the device never asked for does not.
	tun.in <- udp4("192.168.77.10", me, 53, 5000)
	tun.in <- udp4("192.168.77.10", me, 9999, 5000)
	if typ, payload, ok := d.next(5 * time.Second); !ok || typ != tunnel.FrameData || binary.BigEndian.Uint16(payload[20:]) != 53 {
		t.Fatalf("reply frame %#x %v", typ, ok)
	}
	waitFor(t, func() bool { return s.Status().Sessions[0].Dropped.NoFlow == 1 })

	// Kick: the device is told why, then the stream ends.
	if s.Kick("alice") != 1 {
		t.Fatal("kick found no session")
	}
	typ, payload, ok := d.next(5 * time.Second)
	if m, _ := tunnel.DecodeClose(payload); !ok || typ != tunnel.FrameClose || m.Reason != "kicked" {
		t.Fatalf("after kick: frame %#x %q", typ, m.Reason)
	}
	if _, _, ok := d.next(5 * time.Second); ok {
		t.Fatal("stream still open after kick")
	}
	waitFor(t, func() bool { return len(s.Status().Sessions) == 0 })
	h.close()
	d.tc.Close()
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("condition not met in 5 s; goroutines:\n%s", buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gatewayHarness is a Server on a fake TUN with devices dialled over
// loopback TCP.
type gatewayHarness struct {
	t      *testing.T
	ca     *testCA
	s      *Server
	tun    *fakeTUN
	gwPool *x509.CertPool
	logs   *testenv.LogBuffer // the gateway's log
	cancel context.CancelFunc
	conns  sync.WaitGroup
}

func newGatewayHarness(t *testing.T, policies []policy.Policy, loop netip.Prefix) *gatewayHarness {
	t.Helper()
	return newGatewayHarnessOn(t, policies, loop, nil)
}

// newGatewayHarnessOn is newGatewayHarness with the server's TUN made by
// wrap from the harness's fakeTUN (nil: the fakeTUN itself).
func newGatewayHarnessOn(t *testing.T, policies []policy.Policy, loop netip.Prefix, wrap func(*fakeTUN) tunnel.Device) *gatewayHarness {
	t.Helper()
	return newGatewayHarnessWith(t, policies, loop, wrap, nil)
}

// newGatewayHarnessWith is newGatewayHarnessOn with the config changed by
// tweak (nil: none) before it is normalized; its lease file is in a
// temporary directory.
func newGatewayHarnessWith(t *testing.T, policies []policy.Policy, loop netip.Prefix, wrap func(*fakeTUN) tunnel.Device, tweak func(*Config)) *gatewayHarness {
	t.Helper()
	dir := t.TempDir()
	ca := newTestCA(t, "Harness CA")
	gw := ca.leafWithKey(t, "gw.test", nil, x509.ExtKeyUsageServerAuth, "gw.test")
	writePEM(t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", ca.cert.Raw)
	writePEM(t, filepath.Join(dir, "gw.crt"), "CERTIFICATE", gw.Certificate[0])
	keyDER, _ := x509.MarshalPKCS8PrivateKey(gw.PrivateKey)
	writePEM(t, filepath.Join(dir, "gw.key"), "PRIVATE KEY", keyDER)
	writeFile(t, filepath.Join(dir, "server.toml"), harnessTOML(""))
	cfg := &Config{
		Path:     filepath.Join(dir, "server.toml"),
		TLS:      TLSConfig{Cert: filepath.Join(dir, "gw.crt"), Key: filepath.Join(dir, "gw.key"), ClientCA: filepath.Join(dir, "ca.crt")},
		Tunnel:   TunnelConfig{IPv4Pool: "10.8.0.0/24", LeaseFile: filepath.Join(dir, "leases.json")},
		Policies: policies,
	}
	if tweak != nil {
		tweak(cfg)
	}
	if err := cfg.normalize(); err != nil {
		t.Fatal(err)
	}
	logs := &testenv.LogBuffer{}
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.MultiWriter(logs, testLogOut()), nil)))
	if err != nil {
		t.Fatal(err)
	}
	h := &gatewayHarness{t: t, ca: ca, s: s, logs: logs, tun: newFakeTUN(), gwPool: x509.NewCertPool()}
	h.tun.loop = loop
	h.gwPool.AddCert(ca.cert)
	s.dev = h.tun
	// Devices of the harness do not answer keepalives, and the probe
	// ignores their kernels' ACKs: a second connect of a certificate
	// replaces the first after a short probe (duplicate.go).
	s.probeTimeout = 50 * time.Millisecond
	s.probeNoTransport = true
	if wrap != nil {
		s.dev = wrap(h.tun)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	s.wg.Add(1)
	go s.routineReadTUN(ctx, tunnel.NewPacketSource(s.dev))
	return h
}

// device is one connected laptop in a gatewayHarness.
type device struct {
	tc    *tls.Conn
	w     *tunnel.Writer
	r     *tunnel.Reader
	addr  string
	addr6 string        // on a dual-stack gateway
	cfg   tunnel.Config // as pushed
}

// tcpPair returns the two ends of a loopback TCP connection.
func (h *gatewayHarness) tcpPair() (cli, srv net.Conn) {
	t := h.t
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return cli, srv
}

func (h *gatewayHarness) connect(cert tls.Certificate) *device {
	t := h.t
	t.Helper()
	d := h.dial(cert)
	if err := d.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion}); err != nil {
		t.Fatal(err)
	}
	typ, payload, err := d.r.Next()
	if err != nil || typ != tunnel.FrameConfig {
		m, _ := tunnel.DecodeClose(payload)
		t.Fatalf("first frame %#x (%q): %v", typ, m.Reason, err)
	}
	pc, err := tunnel.DecodeConfig(payload)
	if err != nil {
		t.Fatal(err)
	}
	d.addr, d.cfg = pc.Address.Addr().String(), pc
	if pc.Address6.IsValid() {
		d.addr6 = pc.Address6.Addr().String()
	}
	// The config is pushed before the session goes live (register is the
	// last step): wait until this connection's session is (an older
	// session of the same device may hold the same address until then).
	me := d.tc.LocalAddr().String()
	waitFor(t, func() bool {
		for _, st := range h.s.Status().Sessions {
			if st.Address == d.addr && st.Remote == me {
				return true
			}
		}
		return false
	})
	return d
}

// dial completes the TLS handshake of a device and sends nothing else.
func (h *gatewayHarness) dial(cert tls.Certificate) *device {
	t := h.t
	t.Helper()
	cli, srv := h.tcpPair()
	h.conns.Add(1)
	go func() { defer h.conns.Done(); h.s.handshake(context.Background(), srv, h.s.tlsConfig()) }()
	// Like the laptop, send the certificate whatever CAs the gateway names.
	tc := tls.Client(cli, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: h.gwPool, ServerName: "gw.test", NextProtos: []string{tunnel.ALPN},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	return &device{tc: tc, w: tunnel.NewWriter(tc, 0), r: tunnel.NewReader(tc, 0)}
}

func (d *device) send(t *testing.T, p []byte) {
	t.Helper()
	b := tunnel.NewBatch(1, tunnel.Headroom+len(p))
	b.Sizes[0] = copy(b.Bufs[0][tunnel.Headroom:], p)
	if err := d.w.WriteBatch(b.Bufs, b.Sizes, 1, tunnel.Headroom); err != nil {
		t.Fatal(err)
	}
}

// next returns the next data or close frame, skipping keepalives; ok is
// false when nothing but keepalives came within wait.
func (d *device) next(wait time.Duration) (typ byte, payload []byte, ok bool) {
	_ = d.tc.SetReadDeadline(time.Now().Add(wait))
	for {
		typ, payload, err := d.r.Next()
		if err != nil {
			return 0, nil, false
		}
		if typ != tunnel.FrameKeepalive {
			return typ, payload, true
		}
	}
}

func (h *gatewayHarness) close() {
	h.s.closeAll("shutdown")
	h.conns.Wait()
	h.cancel()
	h.tun.Close()
	h.s.wg.Wait()
}

// TestDeviceToDevice: a device reaches another device only if its own
// policy allows that address; the other device's replies come back; the
// other device cannot open flows of its own the other way.
func TestDeviceToDevice(t *testing.T) {
	before := runtime.NumGoroutine()
	h := newGatewayHarness(t, []policy.Policy{
		{Name: "eng", Match: policy.Match{OU: []string{"eng"}}, Allow: []string{"10.8.0.0/24 udp/7000"}},
		{Name: "ops", Match: policy.Match{OU: []string{"ops"}}, Allow: []string{"192.168.77.0/24"}},
	}, netip.MustParsePrefix("10.8.0.0/24"))
	alice := h.connect(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	bob := h.connect(h.ca.leafWithKey(t, "bob", []string{"ops"}, x509.ExtKeyUsageClientAuth))

	alice.send(t, udp4(alice.addr, bob.addr, 4000, 7000))
	if typ, p, ok := bob.next(5 * time.Second); !ok || typ != tunnel.FrameData || binary.BigEndian.Uint16(p[22:]) != 7000 {
		t.Fatalf("bob did not get alice's packet (%#x, %v)", typ, ok)
	}
	bob.send(t, udp4(bob.addr, alice.addr, 7000, 4000)) // reply to alice's flow
	if typ, p, ok := alice.next(5 * time.Second); !ok || typ != tunnel.FrameData || binary.BigEndian.Uint16(p[20:]) != 7000 {
		t.Fatalf("alice did not get bob's reply (%#x, %v)", typ, ok)
	}
	bob.send(t, udp4(bob.addr, alice.addr, 7001, 4000)) // a flow of bob's own: ops may not reach devices
	waitFor(t, func() bool {
		for _, st := range h.s.Status().Sessions {
			if st.Device == "bob" && st.Dropped.Policy == 1 {
				return true
			}
		}
		return false
	})
	for _, p := range h.tun.packets() {
		if binary.BigEndian.Uint16(p[20:]) == 7001 {
			t.Fatal("bob opened a flow to alice without a policy allowing it")
		}
	}

	// One session per device: alice again replaces the first session.
	alice2 := h.connect(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	typ, p, ok := alice.next(5 * time.Second)
	if m, _ := tunnel.DecodeClose(p); !ok || typ != tunnel.FrameClose || m.Reason != "replaced" {
		t.Fatalf("first alice session: frame %#x %q, want close \"replaced\"", typ, m.Reason)
	}
	if alice2.addr != alice.addr {
		t.Fatalf("alice moved from %s to %s on reconnect", alice.addr, alice2.addr)
	}
	if n := len(h.s.Status().Sessions); n != 2 {
		t.Fatalf("%d sessions, want alice and bob", n)
	}
	h.close()
	for _, d := range []*device{alice, alice2, bob} {
		d.tc.Close()
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
}

// TestProcsFollowSessions: in automatic mode GOMAXPROCS is one per live
// session or handshake in flight, and falls back when sessions end.
func TestProcsFollowSessions(t *testing.T) {
	h := newGatewayHarness(t, []policy.Policy{{Name: "all", Match: policy.Match{CN: []string{"*"}}, Allow: []string{"10.0.0.0/8"}}},
		netip.MustParsePrefix("10.8.0.0/24"))
	defer h.close()
	var mu sync.Mutex
	cur, seen := 1, []int(nil)
	h.s.procs = procs.NewFunc(0, func(n int) int {
		mu.Lock()
		defer mu.Unlock()
		if n <= 0 && seen == nil {
			seen = []int{}
			return 8 // the machine's CPUs, asked once at start
		}
		old := cur
		if n > 0 {
			cur = n
			seen = append(seen, n)
		}
		return old
	})
	now := func() int { mu.Lock(); defer mu.Unlock(); return cur }
	alice := h.connect(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	waitFor(t, func() bool { h.s.sessMu.Lock(); defer h.s.sessMu.Unlock(); return h.s.shaking == 0 && now() == 1 })

	// A handshake in flight counts too, and stops counting when refused.
	mu.Lock()
	before := len(seen)
	mu.Unlock()
	other := newTestCA(t, "Other CA")
	cli, srv := h.tcpPair()
	refused := make(chan struct{})
	go func() { defer close(refused); h.s.handshake(context.Background(), srv, h.s.tlsConfig()) }()
	tc := tls.Client(cli, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: h.gwPool, ServerName: "gw.test",
		Certificates: []tls.Certificate{other.leafWithKey(t, "mallory", nil, x509.ExtKeyUsageClientAuth)}, NextProtos: []string{tunnel.ALPN}})
	_ = tc.Handshake()
	_, _ = tc.Read(make([]byte, 1)) // TLS 1.3: the refusal arrives after the client's Finished
	tc.Close()
	<-refused
	mu.Lock()
	if got := seen[before:]; !slices.Equal(got, []int{2, 1}) {
		t.Errorf("GOMAXPROCS during a refused handshake next to one session went %v, want [2 1]", got)
	}
	mu.Unlock()

	bob := h.connect(h.ca.leafWithKey(t, "bob", []string{"ops"}, x509.ExtKeyUsageClientAuth))
	waitFor(t, func() bool { return now() == 2 })
	mu.Lock()
	if !slices.Contains(seen, 2) || seen[len(seen)-1] != 2 {
		t.Errorf("GOMAXPROCS went %v with two sessions, want it to end at 2", seen)
	}
	mu.Unlock()
	alice.tc.Close()
	waitFor(t, func() bool { return now() == 1 })
	bob.tc.Close()
	waitFor(t, func() bool { return now() == 1 && h.s.Status().CPUs == 1 })
}
