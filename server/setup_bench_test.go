//go:build unix

package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/server/policy"
	"github.com/sallyport/sallyport/tunnel"
)

// BenchmarkSessionSetup measures what one new session costs the process
// (CPU ms per session, both ends in this process): a device's TLS 1.3 mTLS
// handshake over loopback, hello, config and close, against the gateway
// (tlsConfig, handshake, newSession, run, close) and against a bare
// crypto/tls server doing the same handshake and frames, as `make scale`
// compares them. The difference between the two is the gateway's own
// share; profile it with
//
//	go test -run '^$' -bench SessionSetup/gateway -cpuprofile cpu.out ./server
//
// Devices are round-robin over a few certificates so that sessions end
// before the same device comes back (no replacement, no flap rule).
// gateway-10k-leases is a gateway that also keeps the leases of 10,000
// other devices and saves its lease file as it runs (routineSaveLeases),
// as a company's gateway does.
func BenchmarkSessionSetup(b *testing.B) {
	bs := newBenchSetup(b)
	for _, leases := range []int{0, 10000} {
		name := "gateway"
		if leases > 0 {
			name = fmt.Sprintf("gateway-%dk-leases", leases/1000)
		}
		b.Run(name, func(b *testing.B) {
			s := bs.gateway(b, leases)
			conf := s.tlsConfig()
			var wg sync.WaitGroup
			bs.run(b, func(c net.Conn) {
				wg.Add(1)
				go func() { defer wg.Done(); s.handshake(context.Background(), c, conf) }()
			}, wg.Wait)
			s.closeAll("shutdown")
			wg.Wait()
		})
	}
	b.Run("bare", func(b *testing.B) {
		conf := &tls.Config{Certificates: []tls.Certificate{bs.gwCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: bs.caPool}
		tunnel.TLSDefaults(conf)
		frame, err := tunnel.AppendFrame(nil, tunnel.FrameConfig, []byte(`{"address":"10.8.0.2/24"}`))
		if err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		bs.run(b, func(c net.Conn) {
			wg.Add(1)
			go func() { defer wg.Done(); benchBareSession(c, conf, frame) }()
		}, wg.Wait)
	})
}

// benchSetup is a CA, a gateway certificate and device certificates for
// BenchmarkSessionSetup.
type benchSetup struct {
	dir     string
	caCert  *x509.Certificate
	caPool  *x509.CertPool
	gwCert  tls.Certificate
	devices []tls.Certificate
}

func newBenchSetup(b *testing.B) *benchSetup {
	b.Helper()
	ca := newTestCA(b, "Bench CA")
	bs := &benchSetup{dir: b.TempDir(), caCert: ca.cert, caPool: x509.NewCertPool()}
	bs.caPool.AddCert(ca.cert)
	leaf := func(cn string, eku x509.ExtKeyUsage, dns ...string) tls.Certificate {
		return ca.leafWithKey(b, cn, []string{"eng"}, eku, dns...)
	}
	bs.gwCert = leaf("gw.test", x509.ExtKeyUsageServerAuth, "gw.test")
	for i := range 32 {
		bs.devices = append(bs.devices, leaf(fmt.Sprintf("laptop-%02d", i), x509.ExtKeyUsageClientAuth))
	}
	return bs
}

// gateway is a Server with the setup's files on a fake TUN, as in
// newGatewayHarnessWith; with leases > 0 its pool is a /16 that holds that
// many leases of other devices, and it saves its lease file as it runs.
func (bs *benchSetup) gateway(b *testing.B, leases int) *Server {
	b.Helper()
	dir := b.TempDir()
	writePEM := func(path, typ string, der []byte) {
		if err := writePEMFile(path, typ, der); err != nil {
			b.Fatal(err)
		}
	}
	writePEM(filepath.Join(dir, "ca.crt"), "CERTIFICATE", bs.caCert.Raw)
	writePEM(filepath.Join(dir, "gw.crt"), "CERTIFICATE", bs.gwCert.Certificate[0])
	keyDER, _ := x509.MarshalPKCS8PrivateKey(bs.gwCert.PrivateKey)
	writePEM(filepath.Join(dir, "gw.key"), "PRIVATE KEY", keyDER)
	cfg := &Config{
		Path:     filepath.Join(dir, "server.toml"),
		TLS:      TLSConfig{Cert: filepath.Join(dir, "gw.crt"), Key: filepath.Join(dir, "gw.key"), ClientCA: filepath.Join(dir, "ca.crt")},
		Tunnel:   TunnelConfig{IPv4Pool: "10.8.0.0/16", LeaseFile: filepath.Join(dir, "leases.json")},
		Policies: []policy.Policy{{Name: "eng", Match: policy.Match{OU: []string{"eng"}}, Allow: []string{"192.168.77.0/24"}}},
	}
	if err := cfg.normalize(); err != nil {
		b.Fatal(err)
	}
	s, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	tun := newFakeTUN()
	s.dev = tun
	ctx, cancel := context.WithCancel(context.Background())
	s.wg.Add(1)
	go s.routineReadTUN(ctx, tunnel.NewPacketSource(s.dev))
	if leases > 0 {
		for i := range leases {
			key := fmt.Sprintf("CN=Other CA\x00device-%05d", i)
			a, a6, err := s.pool.Acquire(key, staticAddr{})
			if err != nil {
				b.Fatal(err)
			}
			s.pool.Release(key, a, a6)
		}
		s.saveLeases()
		s.wg.Add(1)
		go s.routineSaveLeases(ctx)
	}
	b.Cleanup(func() { cancel(); tun.Close(); s.wg.Wait() })
	return s
}

// run connects b.N devices one after another through a loopback listener
// whose connections go to serve, each sending its hello, reading its
// config and closing, and reports the process's CPU per session including
// the teardown (wait returns when every served connection has ended).
func (bs *benchSetup) run(b *testing.B, serve func(net.Conn), wait func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			serve(c)
		}
	}()
	hello, err := tunnel.AppendFrame(nil, tunnel.FrameHello, []byte(fmt.Sprintf(`{"version":%d}`, tunnel.ProtocolVersion)))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU()
	for i := range b.N {
		cert := &bs.devices[i%len(bs.devices)]
		if err := benchDevice(ln.Addr().String(), bs.caPool, cert, hello); err != nil {
			b.Fatalf("session %d: %v", i, err)
		}
	}
	ln.Close()
	<-accepted
	wait()
	b.StopTimer()
	b.ReportMetric(float64(processCPU()-cpu0)/float64(time.Millisecond)/float64(b.N), "cpu-ms/session")
}

// benchDevice is one device: handshake, hello, config, close.
func benchDevice(addr string, roots *x509.CertPool, cert *tls.Certificate, hello []byte) error {
	conf := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "gw.test", NextProtos: []string{tunnel.ALPN},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }}
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, conf)
	if err != nil {
		return err
	}
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := tc.Write(hello); err != nil {
		return err
	}
	var hdr [tunnel.HeaderLen]byte
	if _, err := io.ReadFull(tc, hdr[:]); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if hdr[0] != tunnel.FrameConfig {
		return fmt.Errorf("first frame %#x", hdr[0])
	}
	_, err = io.CopyN(io.Discard, tc, int64(int(hdr[1])<<16|int(hdr[2])<<8|int(hdr[3])))
	return err
}

// benchBareSession is bench/scale's bare server session: handshake, read
// the hello, send the config, read until the device closes.
func benchBareSession(c net.Conn, conf *tls.Config, configFrame []byte) {
	defer c.Close()
	tc := tls.Server(c, conf)
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		return
	}
	var hdr [tunnel.HeaderLen]byte
	if _, err := io.ReadFull(tc, hdr[:]); err != nil {
		return
	}
	if _, err := io.CopyN(io.Discard, tc, int64(int(hdr[1])<<16|int(hdr[2])<<8|int(hdr[3]))); err != nil {
		return
	}
	if _, err := tc.Write(configFrame); err != nil {
		return
	}
	_, _ = io.Copy(io.Discard, tc)
}

// processCPU is the user plus system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writePEMFile writes one PEM block.
func writePEMFile(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
