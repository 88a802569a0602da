package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/tunnel"
)

// Bounds on one device session.
const (
	connectTimeout   = 15 * time.Second // TCP + TLS + hello + config, like the laptop
	keepaliveWrite   = 5 * time.Second  // write deadline of one keepalive
	closeWrite       = time.Second      // write deadline of the goodbye Close frame
	defaultKeepalive = 10 * time.Second // when the config pushes none
)

// device is one laptop of the simulated fleet.
type device struct {
	name string
	cert tls.Certificate
}

// loadDevices reads devices/PREFIXnnnnn.{crt,key} for n devices.
func loadDevices(dir, prefix string, n int) ([]*device, error) {
	devs := make([]*device, n)
	for i := range devs {
		name := deviceName(prefix, i)
		crt := filepath.Join(dir, "devices", name+".crt")
		cert, err := tls.LoadX509KeyPair(crt, filepath.Join(dir, "devices", name+".key"))
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", name, err)
		}
		devs[i] = &device{name: name, cert: cert}
	}
	return devs, nil
}

// dialer connects devices to one server address.
type dialer struct {
	addr   string
	conf   *tls.Config
	locals []netip.Addr // source addresses, used in turn (spreads ephemeral ports)
	next   atomic.Uint32
}

func newDialer(addr, serverName, caFile string, locals []netip.Addr) (*dialer, error) {
	cas, err := pki.LoadCertificates(caFile)
	if err != nil {
		return nil, err
	}
	conf := &tls.Config{RootCAs: pki.NewPool(cas), ServerName: serverName}
	tunnel.TLSDefaults(conf)
	return &dialer{addr: addr, conf: conf, locals: locals}, nil
}

// refusedError is a Close frame the server sent instead of a config.
type refusedError struct{ reason string }

func (e *refusedError) Error() string { return "refused: " + e.reason }

// session is one device's live connection, after its config arrived.
type session struct {
	dev    *device
	tc     *tls.Conn
	w      *tunnel.Writer
	r      *tunnel.Reader
	cfg    tunnel.Config
	stop   chan struct{} // closed by Close: the keepalive loop ends
	ended  chan struct{} // closed when the reader has ended
	reason string        // why the reader ended; read after ended
	wg     sync.WaitGroup
	once   sync.Once
	closed atomic.Bool // Close was called (an end is expected)
	// renewed carries the gateway's answers to renewal requests
	// (renew.go); nil when the gateway did not offer renewal.
	renewed chan tunnel.RenewReply
}

// connect runs one device's handshake: TCP, TLS 1.3 with the device's
// certificate, the hello, the pushed config. The session is not running
// until start.
func (d *dialer) connect(ctx context.Context, dev *device) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	nd := net.Dialer{}
	if len(d.locals) > 0 {
		a := d.locals[int(d.next.Add(1))%len(d.locals)]
		nd.LocalAddr = &net.TCPAddr{IP: a.AsSlice()}
	}
	conf := d.conf.Clone()
	conf.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &dev.cert, nil }
	raw, err := nd.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, conf)
	dl, _ := ctx.Deadline()
	_ = tc.SetDeadline(dl)
	s, err := handshake(ctx, tc, dev)
	if err != nil {
		tc.Close()
		return nil, err
	}
	_ = tc.SetDeadline(time.Time{})
	return s, nil
}

func handshake(ctx context.Context, tc *tls.Conn, dev *device) (*session, error) {
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != tunnel.ALPN {
		return nil, fmt.Errorf("server speaks %q, not %s", p, tunnel.ALPN)
	}
	s := &session{dev: dev, tc: tc, w: tunnel.NewWriter(tc, 0), r: tunnel.NewReader(tc, 0),
		stop: make(chan struct{}), ended: make(chan struct{})}
	hello, err := tunnel.EncodeHello(tunnel.Hello{Version: tunnel.ProtocolVersion, Caps: []string{tunnel.CapRenew}, Software: "sallyport-scale"})
	if err != nil {
		return nil, err
	}
	if err := s.w.WriteControl(tunnel.FrameHello, hello); err != nil {
		return nil, fmt.Errorf("send hello: %w", err)
	}
	typ, payload, err := s.r.Next()
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	switch typ {
	case tunnel.FrameConfig:
	case tunnel.FrameClose:
		m, err := tunnel.DecodeClose(payload)
		if err != nil {
			return nil, fmt.Errorf("bad close frame: %w", err)
		}
		return nil, &refusedError{reason: m.Reason}
	default:
		return nil, fmt.Errorf("first frame is %s, want config", tunnel.FrameName(typ))
	}
	if s.cfg, err = tunnel.DecodeConfig(payload); err != nil {
		return nil, fmt.Errorf("bad config: %w", err)
	}
	if tunnel.HasCap(s.cfg.Caps, tunnel.CapRenew) {
		s.renewed = make(chan tunnel.RenewReply, 1)
	}
	return s, nil
}

// start runs the session's reader and keepalive loops; onEnd is called
// once, from the reader, when the session ends for a reason other than
// Close (the server closed it, it went silent, a write failed).
func (s *session) start(onEnd func(s *session)) {
	ka := s.cfg.Keepalive
	if ka <= 0 {
		ka = defaultKeepalive
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.reason = s.read()
		close(s.ended)
		s.tc.Close() // ends the keepalive loop's next write
		if !s.closed.Load() && onEnd != nil {
			onEnd(s)
		}
	}()
	go func() {
		defer s.wg.Done()
		s.keepalives(ka)
	}()
}

// read consumes frames until the stream ends and says why.
func (s *session) read() string {
	silence := s.cfg.Timeout
	for {
		if silence > 0 {
			_ = s.tc.SetReadDeadline(time.Now().Add(silence))
		}
		typ, payload, err := s.r.Next()
		if err != nil {
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				return "gateway silent"
			case errors.Is(err, io.EOF):
				return "eof"
			}
			return err.Error()
		}
		if typ == tunnel.FrameClose {
			if m, err := tunnel.DecodeClose(payload); err == nil {
				return "close: " + m.Reason
			}
			return "close: (bad frame)"
		}
		if typ == tunnel.FrameRenewed && s.renewed != nil {
			r, err := tunnel.DecodeRenewReply(payload)
			if err != nil {
				return "bad renewal answer: " + err.Error()
			}
			select {
			case s.renewed <- r:
			default:
			}
		}
	}
}

func (s *session) keepalives(every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-s.ended:
			return
		case <-t.C:
			_ = s.tc.SetWriteDeadline(time.Now().Add(keepaliveWrite))
			if err := s.w.WriteKeepalive(); err != nil {
				s.tc.Close() // the reader ends and reports
				return
			}
		}
	}
}

// Close ends the session and waits for its goroutines. graceful sends a
// Close frame first (a laptop going down); otherwise the TCP connection is
// reset as if the network vanished.
func (s *session) Close(graceful bool) {
	s.once.Do(func() {
		s.closed.Store(true)
		close(s.stop)
		if graceful {
			_ = s.tc.SetWriteDeadline(time.Now().Add(closeWrite))
			_ = s.w.WriteClose(string(tunnel.ReasonClientShutdown))
		} else if tcp, ok := s.tc.NetConn().(*net.TCPConn); ok {
			_ = tcp.SetLinger(0)
		}
		s.tc.Close()
	})
	s.wg.Wait()
}

// closeNow closes a connection that never started (no goroutines yet).
func (s *session) closeNow() {
	s.closed.Store(true)
	s.tc.Close()
}

// fdLimit reports the process's RLIMIT_NOFILE soft limit (for a clear
// error before a run that cannot fit), or 0 when unknown.
func fdLimit() uint64 {
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) != nil {
		return 0
	}
	return rl.Cur
}
