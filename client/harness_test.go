package client

// The laptop-side harness: a fake TUN (tunnel.Device, and VnetDevice when
// asked) and a fake gateway on loopback TLS that speaks the wire protocol
// with tunnel.Reader/Writer, so Run, session, readStream, routineTimers and
// routineReadTUN (both send paths) run in unit tests without root. The
// laptop's network changes go to a recorder (system.go).

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testenv"
	"github.com/sallyport/sallyport/tunnel"
)

// wait is how long a test waits for an event that must happen before it
// calls the event missing (a failure guard, not a timing assertion).
const wait = 10 * time.Second

// fakeTUN is a TUN device in memory. Packets the test puts in toNet come
// out of Read/ReadVnet as if the laptop's kernel sent them; every packet the
// client writes arrives in fromNet.
type fakeTUN struct {
	vnet    bool // offer the VnetDevice path (as the wireguard driver does)
	toNet   chan []byte
	fromNet chan fromGateway
	closed  chan struct{}
	once    sync.Once
}

// fromGateway is one packet written to the fake TUN.
type fromGateway struct {
	pkt  []byte
	hdr  tunnel.VnetHdr
	vnet bool // written whole through WriteVnet
}

func newFakeTUN(vnet bool) *fakeTUN {
	return &fakeTUN{vnet: vnet, toNet: make(chan []byte), fromNet: make(chan fromGateway, 256), closed: make(chan struct{})}
}

func (f *fakeTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case p := <-f.toNet:
		sizes[0] = copy(bufs[0][offset:], p)
		return 1, nil
	case <-f.closed:
		return 0, fmt.Errorf("read fake: %w", os.ErrClosed)
	}
}

func (f *fakeTUN) deliver(p fromGateway) error {
	select {
	case f.fromNet <- p:
		return nil
	case <-f.closed:
		return fmt.Errorf("write fake: %w", os.ErrClosed)
	}
}

func (f *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		if err := f.deliver(fromGateway{pkt: bytes.Clone(b[offset:])}); err != nil {
			return i, err
		}
	}
	return len(bufs), nil
}

func (f *fakeTUN) ReadVnet(buf []byte, offset int) (int, error) {
	select {
	case p := <-f.toNet:
		// A test packet is a virtio-net header followed by the packet.
		copy(buf[offset-tunnel.VnetHdrLen:], p)
		return len(p) - tunnel.VnetHdrLen, nil
	case <-f.closed:
		return 0, fmt.Errorf("read fake: %w", os.ErrClosed)
	}
}

func (f *fakeTUN) WriteVnet(buf []byte, offset int) error {
	return f.deliver(fromGateway{pkt: bytes.Clone(buf[offset:]), hdr: tunnel.DecodeVnetHdr(buf[offset-tunnel.VnetHdrLen:]), vnet: true})
}

func (f *fakeTUN) VnetCapable() bool { return f.vnet }
func (f *fakeTUN) BatchSize() int    { return 4 }
func (f *fakeTUN) Name() string      { return "fake0" }
func (f *fakeTUN) MTU() int          { return 1500 }
func (f *fakeTUN) Close() error      { f.once.Do(func() { close(f.closed) }); return nil }

// send hands p to the client as a packet from the laptop's kernel; with
// a vnet device hdr goes in front of it.
func (f *fakeTUN) send(t *testing.T, p []byte, hdr tunnel.VnetHdr) {
	t.Helper()
	if f.vnet {
		b := make([]byte, tunnel.VnetHdrLen+len(p))
		hdr.Encode(b)
		copy(b[tunnel.VnetHdrLen:], p)
		p = b
	}
	select {
	case f.toNet <- p:
	case <-time.After(wait):
		t.Fatal("the client does not read the TUN")
	}
}

// recv returns the next packet the client wrote to the TUN.
func (f *fakeTUN) recv(t *testing.T) fromGateway {
	t.Helper()
	select {
	case p := <-f.fromNet:
		return p
	case <-time.After(wait):
		t.Fatal("no packet reached the TUN")
	}
	return fromGateway{}
}

// recorder is the laptop's network stack for tests: it records every
// change as one line ("route+ 10.1.0.0/16").
type recorder struct {
	dev    tunnel.Device
	mu     sync.Mutex
	calls  []string
	dnsErr error
	k      fakeKernel // routes, rules and kill switch, for read-back (route_test.go)
}

func (r *recorder) note(format string, a ...any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf(format, a...))
	return nil
}

func (r *recorder) log() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

func (r *recorder) OpenDevice(name, driver string, mtu int) (tunnel.Device, error) {
	return r.dev, r.note("open %s", name)
}
func (r *recorder) SetAddress(dev string, p netip.Prefix) error { return r.note("addr %s", p) }
func (r *recorder) LinkUp(dev string, mtu int) error            { return r.note("up %d", mtu) }
func (r *recorder) SetDNS(dev string, servers []netip.Addr, domains []string) (string, error) {
	if r.dnsErr != nil {
		return "", r.dnsErr
	}
	return "recorder", r.note("dns %v %v", servers, domains)
}
func (r *recorder) RevertDNS(dev string) error { return r.note("dns-") }
func (r *recorder) RecoverDNS(dev string) (int, error) {
	return 0, r.note("dns-recover %s", dev)
}

// fakeGateway accepts TLS connections on loopback and hands each, after
// the handshake, to the test as a gwConn.
type fakeGateway struct {
	ln    net.Listener
	conf  *tls.Config
	conns chan *gwConn
	quit  chan struct{}
	wg    sync.WaitGroup
}

// gwConn is the gateway's end of one session.
type gwConn struct {
	tls *tls.Conn
	r   *tunnel.Reader
	w   *tunnel.Writer
}

func newFakeGateway(t *testing.T, conf *tls.Config) *fakeGateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGateway{ln: ln, conf: conf, conns: make(chan *gwConn, 16), quit: make(chan struct{})}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(raw, g.conf)
			_ = tc.SetDeadline(time.Now().Add(wait))
			if err := tc.Handshake(); err != nil {
				tc.Close()
				continue
			}
			_ = tc.SetDeadline(time.Time{})
			select {
			case g.conns <- &gwConn{tls: tc, r: tunnel.NewReader(tc, streamBufSize), w: tunnel.NewWriter(tc, streamBufSize)}:
			case <-g.quit:
				tc.Close()
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(g.quit)
		ln.Close()
		g.wg.Wait()
		close(g.conns)
		for c := range g.conns {
			c.tls.Close()
		}
	})
	return g
}

// accept returns the next session that completed TLS.
func (g *fakeGateway) accept(t *testing.T) *gwConn {
	t.Helper()
	select {
	case c := <-g.conns:
		t.Cleanup(func() { c.tls.Close() })
		return c
	case <-time.After(wait):
		t.Fatal("the client did not connect")
	}
	return nil
}

// next reads the next frame the client sent, skipping keepalives.
func (c *gwConn) next(t *testing.T) (byte, []byte) {
	t.Helper()
	_ = c.tls.SetReadDeadline(time.Now().Add(wait))
	for {
		typ, p, err := c.r.Next()
		if err != nil {
			t.Fatalf("gateway read: %v", err)
		}
		if typ != tunnel.FrameKeepalive {
			return typ, bytes.Clone(p)
		}
	}
}

// hello reads the client's hello.
func (c *gwConn) hello(t *testing.T) tunnel.Hello {
	t.Helper()
	typ, p := c.next(t)
	if typ != tunnel.FrameHello {
		t.Fatalf("first frame %s, want hello", tunnel.FrameName(typ))
	}
	h, err := tunnel.DecodeHello(p)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// refuse answers like the gateway refusing an authenticated device: one
// Close frame with reason, then close without reading.
func (c *gwConn) refuse(t *testing.T, reason string) {
	t.Helper()
	if err := c.w.WriteClose(reason); err != nil {
		t.Fatal(err)
	}
	c.tls.Close()
}

// testEnv is one client wired to a fake TUN, a recorder and a fake gateway.
type testEnv struct {
	t        *testing.T
	ca       *testCA
	gw       *fakeGateway
	tun      *fakeTUN
	sys      *recorder
	c        *Client
	logs     *syncBuffer
	ready    chan struct{} // closed when the first session is up
	stMu     sync.Mutex
	states   []string // OnState lines, "+line" connected, "-line" not
	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = testenv.LogBuffer

// noLeaks fails t if goroutines started during the test are still running
// once its cleanups are done. Register it first so it runs last.
func noLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(wait)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Fatalf("%d goroutines leaked:\n%s", runtime.NumGoroutine()-before, buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// gatewayTLS is the fake gateway's TLS config: a proper gateway leaf,
// client certificates verified against clientCA.
func gatewayTLS(t *testing.T, ca, clientCA *testCA, edit func(*x509.Certificate)) *tls.Config {
	gw, _, _ := ca.leaf(t, "gw.test", both(gatewayLeaf, edit))
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	conf := &tls.Config{Certificates: []tls.Certificate{gw}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	tunnel.TLSDefaults(conf)
	return conf
}

type envOpt struct {
	vnet    bool
	gwConf  func(t *testing.T, ca *testCA) *tls.Config // default gatewayTLS(ca, ca)
	edit    func(*Config)
	editCA  func(*testCA, *Config) // edit with the environment's CA at hand
	onReady func()                 // Run's ready: the device is in place
	kernel  func(*recorder)        // what the laptop's kernel holds before Run
}

// startClient starts a client against a fresh fake gateway.
func startClient(t *testing.T, o envOpt) *testEnv {
	t.Helper()
	e := &testEnv{t: t, ca: newTestCA(t, "Test CA"), tun: newFakeTUN(o.vnet), logs: &syncBuffer{}, ready: make(chan struct{}), done: make(chan error, 1)}
	conf := gatewayTLS(t, e.ca, e.ca, nil)
	if o.gwConf != nil {
		conf = o.gwConf(t, e.ca)
	}
	e.gw = newFakeGateway(t, conf)
	_, devPEM, keyPEM := e.ca.leaf(t, "alice-laptop", deviceLeaf)
	cfg := &Config{
		Server: e.gw.ln.Addr().String(), ServerName: "gw.test",
		TLS:       TLSConfig{CAPEM: string(e.ca.pem), CertPEM: string(devPEM), KeyPEM: string(keyPEM)},
		Tunnel:    TunnelConfig{Device: "fake0", CPUs: runtime.NumCPU()},
		Admin:     AdminConfig{Socket: filepath.Join(t.TempDir(), "admin.sock")},
		Reconnect: ReconnectConfig{MinDelay: time.Millisecond, MaxDelay: 20 * time.Millisecond, RefusedDelay: time.Hour},
		stateDir:  t.TempDir(), runtimeDir: t.TempDir(),
		Transport: TransportConfig{Mode: TransportTLS}, // the fake gateway speaks the TLS stream only
	}
	if o.edit != nil {
		o.edit(cfg)
	}
	if o.editCA != nil {
		o.editCA(e.ca, cfg)
	}
	if err := cfg.normalize(); err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg, slog.New(slog.NewTextHandler(e.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	e.sys = &recorder{dev: e.tun}
	if o.kernel != nil {
		o.kernel(e.sys)
	}
	c.sys = e.sys
	e.c = c
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	var once sync.Once
	// ready means a session is up; Run's own ready (the device is in
	// place) comes earlier and is checked by TestReadyBeforeSession.
	c.OnState = func(connected bool, line string) {
		e.stMu.Lock()
		e.states = append(e.states, map[bool]string{true: "+", false: "-"}[connected]+line)
		e.stMu.Unlock()
		if connected {
			once.Do(func() { close(e.ready) })
		}
	}
	go func() { e.done <- c.Run(ctx, o.onReady) }()
	t.Cleanup(func() {
		e.stop()
		if t.Failed() {
			t.Logf("client log:\n%s", e.logs.String())
		}
	})
	return e
}

// stop ends Run and waits for it.
func (e *testEnv) stop() {
	e.stopOnce.Do(func() {
		e.cancel()
		select {
		case err := <-e.done:
			if err != nil {
				e.t.Errorf("Run: %v", err)
			}
		case <-time.After(wait):
			e.t.Fatal("Run did not return after cancel")
		}
	})
}

// status waits until the client's status satisfies ok and returns it.
func (e *testEnv) status(what string, ok func(Status) bool) Status {
	e.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		st := e.c.Status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("status never showed %s; last %+v", what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitLog waits until the client logged a line containing want.
func (e *testEnv) waitLog(want string) {
	e.t.Helper()
	deadline := time.Now().Add(wait)
	for !strings.Contains(e.logs.String(), want) {
		if time.Now().After(deadline) {
			e.t.Fatalf("%q never logged", want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testConfig is the configuration the fake gateway pushes.
func testConfig() tunnel.Config {
	return tunnel.Config{
		Version: tunnel.ProtocolVersion, Address: netip.MustParsePrefix("10.8.0.2/24"), Gateway: netip.MustParseAddr("10.8.0.1"),
		Routes: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("127.0.0.0/8")},
		DNS:    []netip.Addr{netip.MustParseAddr("10.1.0.53")}, SearchDomains: []string{"corp.test"},
		MTU: 1400, Keepalive: time.Hour, Timeout: 2 * time.Hour,
	}
}

// up accepts a session, checks its hello and pushes pc.
func (e *testEnv) up(pc tunnel.Config) (*gwConn, tunnel.Hello) {
	e.t.Helper()
	s := e.gw.accept(e.t)
	h := s.hello(e.t)
	if err := s.w.WriteConfig(pc); err != nil {
		e.t.Fatal(err)
	}
	return s, h
}

// ipv4 is a minimal IPv4 packet (protocol proto) with payload.
func ipv4(proto byte, payload []byte, l4 []byte) []byte {
	p := make([]byte, 20, 20+len(l4)+len(payload))
	p[0], p[8], p[9] = 0x45, 64, proto
	copy(p[12:], []byte{10, 8, 0, 2})
	copy(p[16:], []byte{10, 1, 0, 7})
	p = append(append(p, l4...), payload...)
	binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
	return p
}

// ping is an ICMP echo request from the laptop, marked with n.
func ping(n byte) []byte { return ipv4(1, []byte{8, 0, 0, 0, 0, 1, 0, n}, nil) }

// tcpSuper is a TCP super-packet of size payload bytes as the kernel hands
// it to a TUN with offloads, with its virtio-net header.
func tcpSuper(size, mss int) ([]byte, tunnel.VnetHdr) {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 443)
	tcp[12], tcp[13] = 5<<4, 0x18
	p := ipv4(6, bytes.Repeat([]byte{'x'}, size), tcp)
	return p, tunnel.VnetHdr{Flags: tunnel.VnetFlagNeedsCsum, GSOType: tunnel.VnetGSOTCPv4, HdrLen: 40, GSOSize: uint16(mss), CsumStart: 20, CsumOffset: 16}
}

func hasLine(lines []string, want string) bool { return slices.Contains(lines, want) }

func mustContain(t *testing.T, s, want string) {
	t.Helper()
	if !strings.Contains(s, want) {
		t.Fatalf("%q not in:\n%s", want, s)
	}
}

func testLogger(w *syncBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
