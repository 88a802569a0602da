// Package server is the sallyport gateway: it accepts mutual-TLS connections
// from devices, decides trust (trust.go), assigns a tunnel address, and
// relays packets between each device session and one shared TUN interface,
// enforcing the device's policy on every packet (dataplane.go device ->
// LAN, todevice.go LAN -> device: one loop each, whatever the TUN driver).
// ARCHITECTURE.md at the top of the repository describes the whole.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/internal/adminsock"
	"github.com/sallyport/sallyport/internal/procs"
	"github.com/sallyport/sallyport/internal/tomlconf"
	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/server/metrics"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/masque"
)

// snapshot is everything a reload changes: the configuration and the trust
// built from it, stored together.
type snapshot struct {
	cfg   *Config
	trust *trust
}

// config is the configuration in force.
func (s *Server) config() *Config { return s.snap.Load().cfg }

// trustNow is the trust in force.
func (s *Server) trustNow() *trust { return s.snap.Load().trust }

// Server is one running gateway. Create it with New, run it with Run.
type Server struct {
	log *slog.Logger

	cfgMu sync.Mutex // serializes reloads
	// snap is the configuration and the trust in force, swapped as one by
	// Reload: a reader never sees a new config with the old trust.
	snap atomic.Pointer[snapshot]

	pool  *addrPools
	dev   tunnel.Device
	raw   bool      // the TUN passes super-packets whole (tunnel.AsVnet)
	pools dataPools // per-round session buffers (dataplane.go)

	sessMu   sync.Mutex
	byKey    map[string]*session // device key -> live session
	byAddr   addrTable           // read per packet without a lock; O(1) updates under sessMu
	noRoute  atomic.Uint64       // TUN packets for no session
	wg       sync.WaitGroup      // accept loop, handshakes, sessions, TUN reader
	ln       net.Listener
	quic     *quicListener // the datagram path (quic.go); nil when quic.enabled is off
	admin    *adminsock.Server
	started  time.Time
	draining atomic.Bool
	procs    *procs.Scaler // GOMAXPROCS follows the sessions and handshakes
	shaking  int           // handshakes in flight; sessMu
	shakes   shakeTable    // the handshake slots (preauth.go)
	qshakes  shakeTable    // the datagram path's QUIC handshakes (quic.go)

	refusals refusalLog // rate-limited "handshake refused" lines and counts by reason
	dups     dupGuard   // one certificate on two machines (duplicate.go)
	// probeTimeout bounds the duplicate-device probe (0:
	// defaultProbeTimeout; tests shorten it).
	probeTimeout time.Duration
	// probeNoTransport makes the probe ignore what the connection received
	// (tests: harness devices play a laptop that is gone by not reading,
	// while their kernel still acknowledges).
	probeNoTransport bool
	crlStale         atomic.Bool
	meters           meters  // Prometheus counters not kept elsewhere (metrics.go)
	drops            dropLog // log_drops (audit.go)
	drainReq         drainer // `sallyport server drain` (drain.go)

	memReturn memReturn // freed memory back to the OS after sessions close (memreturn.go); routineWatch only

	leaseSaveFailing atomic.Bool // a failed lease save was logged (leases.go)

	journal    renewJournal  // the issuance record of renewals (renew.go)
	renewSlots chan struct{} // renewals decided and signed at once (renew.go onRenew)
	renewGaps  renewGaps     // when each lineage last renewed here (renew.go)
}

// rescaleLocked sizes GOMAXPROCS to the live sessions plus the handshakes
// in flight, so a reconnect storm after a restart (every device doing
// ECDSA at once) gets every CPU, not the one P of an idle gateway. Hold
// sessMu.
func (s *Server) rescaleLocked() {
	s.procs.Sessions(len(s.byKey) + s.shaking)
}

// shakingDelta counts a handshake starting (+1) or ending (-1).
func (s *Server) shakingDelta(d int) {
	s.sessMu.Lock()
	s.shaking += d
	s.rescaleLocked()
	s.sessMu.Unlock()
}

// New loads everything the server needs from cfg but opens nothing yet.
func New(cfg *Config, log *slog.Logger) (*Server, error) {
	t, err := loadTrust(cfg, nil)
	if err != nil {
		return nil, err
	}
	s := &Server{log: log, pool: newPools(cfg), byKey: map[string]*session{}, renewSlots: make(chan struct{}, max(2, 2*runtime.NumCPU()))}
	if err := s.pool.loadLeases(cfg.Tunnel.LeaseFile, cfg.Tunnel.LeaseTTL, log); err != nil {
		return nil, err
	}
	s.snap.Store(&snapshot{cfg: cfg, trust: t})
	s.pool.SetStatic(t.staticAddrs())
	for _, w := range t.warnings {
		log.Warn(w)
	}
	return s, nil
}

// newPools makes the address pools cfg asks for (validated by normalize).
func newPools(cfg *Config) *addrPools {
	var v4, v6 *addrPool
	if p, _ := cfg.Pool(); p.IsValid() {
		v4 = newAddrPool(p)
	}
	if p, _ := cfg.Pool6(); p.IsValid() {
		v6 = newAddrPool(p)
	}
	return newAddrPools(v4, v6)
}

// Run opens the TUN device, the listener and the admin socket, then serves
// until ctx is cancelled (SIGTERM), when it tells every device, closes the
// sessions and removes what it set up. ready, if not nil, is called once
// the gateway accepts connections (systemd notify).
func (s *Server) Run(ctx context.Context, ready func()) error {
	cfg := s.config()
	s.started = time.Now()
	s.checkForwarding()
	s.procs = procs.New(cfg.Tunnel.CPUs)

	dev, err := tunnel.OpenDevice(cfg.Tunnel.Device, cfg.Tunnel.Driver, cfg.Tunnel.MTU)
	if err != nil {
		return err // tunnel.OpenDevice names the device and driver
	}
	s.dev = dev
	defer dev.Close()
	for _, gw := range s.pool.Gateways() {
		if err := tunnel.SetAddress(dev.Name(), gw); err != nil {
			return fmt.Errorf("set address on %s: %w", dev.Name(), err)
		}
	}
	if err := tunnel.LinkUp(dev.Name(), cfg.Tunnel.MTU); err != nil {
		return fmt.Errorf("bring up %s: %w", dev.Name(), err)
	}
	stopNAT, err := s.startNAT(dev.Name())
	if err != nil {
		return err
	}
	if stopNAT != nil {
		defer stopNAT()
	}

	lc := net.ListenConfig{}
	ln, err := lc.Listen(ctx, "tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	s.ln = ln
	s.admin, err = adminsock.ListenOptions(cfg.Admin.Socket, adminsock.Options{Group: cfg.Admin.Group, GroupCmds: cfg.Admin.GroupCommands,
		ReadOnly: []string{"status"}}, s.handleAdmin, s.log)
	if err != nil {
		ln.Close()
		return err
	}
	defer s.admin.Close()
	if cfg.Metrics.Listen != "" {
		ms, err := metrics.Listen(cfg.Metrics.Listen, s, s.log)
		if err != nil {
			ln.Close()
			return err
		}
		defer ms.Close()
		s.log.Info("metrics up", "listen", ms.Addr().String(), "per_device", cfg.Metrics.PerDevice)
		if w := cfg.Metrics.wildcardWarning(); w != "" {
			s.log.Warn(w, "listen", cfg.Metrics.Listen)
		}
	}

	// The routines live until the drain is over, not until SIGTERM:
	// sessions are ended by drain with reason "drain", not by their own
	// timers with "shutdown".
	life, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	if cfg.QUIC.On() {
		q, err := s.startQUIC(life)
		if err != nil {
			ln.Close()
			return err
		}
		s.quic = q
		defer q.close()
	}
	s.wg.Add(4)
	go s.routineSaveLeases(life)
	_, s.raw = tunnel.AsVnet(dev)
	go s.routineReadTUN(life, tunnel.NewPacketSource(dev)) // todevice.go
	go s.routineAccept(life)
	go s.routineWatch(life)
	s.log.Info("gateway up", "listen", ln.Addr().String(), "quic", s.quic != nil, "tun", dev.Name(), "driver", cfg.Tunnel.Driver, "gso", s.raw,
		"address", fmt.Sprint(s.pool.Gateways()), "mtu", cfg.Tunnel.MTU, "policies", len(cfg.Policies),
		"cpus", s.procs.Mode())
	s.checkCRLFresh(time.Now())
	if ready != nil {
		ready()
	}

	trigger := "signal"
	select {
	case <-ctx.Done():
	case <-s.drainReq.c():
		trigger = "admin"
	}
	s.drain(trigger)
	s.log.Info("gateway shutting down")
	cancel()
	s.closeAll(tunnel.ReasonShutdown)
	if s.quic != nil {
		s.quic.close() // waits for the datagram sessions
	}
	dev.Close() // unblocks the TUN reader
	s.wg.Wait()
	s.saveLeases()
	s.journal.close()
	s.log.Info("gateway stopped")
	return nil
}

// checkForwarding warns when the kernel will not route tunnel traffic.
func (s *Server) checkForwarding() {
	check := func(file, family string, v6 bool) {
		b, err := os.ReadFile(file)
		if err != nil {
			return
		}
		if strings.TrimSpace(string(b)) != "1" {
			s.log.Warn(family+" forwarding is off: devices will reach only the gateway itself",
				"fix", forwardingFix(v6))
		}
	}
	if s.pool.v4 != nil {
		check("/proc/sys/net/ipv4/ip_forward", "IPv4", false)
	}
	if s.pool.v6 != nil {
		check("/proc/sys/net/ipv6/conf/all/forwarding", "IPv6", true)
	}
}

// forwardingFix is the advice logged when forwarding is off: the command
// that turns it on now and how to keep it on across reboots. The packaged
// sysctl.d file (systemd/60-sallyport.conf) turns on IPv4 forwarding only;
// its IPv6 line is commented out because forwarding makes the kernel ignore
// router advertisements on interfaces with accept_ra = 1, so IPv6 needs a
// drop-in of the admin's own in /etc/sysctl.d.
func forwardingFix(v6 bool) string {
	if v6 {
		return "sysctl -w net.ipv6.conf.all.forwarding=1; to persist: " +
			"echo 'net.ipv6.conf.all.forwarding = 1' > /etc/sysctl.d/61-sallyport-ipv6.conf " +
			"(the packaged 60-sallyport.conf leaves IPv6 off: with forwarding on, an uplink that takes " +
			"its address or route from router advertisements needs net.ipv6.conf.IFACE.accept_ra = 2)"
	}
	return "sysctl -w net.ipv4.ip_forward=1; to persist: sysctl --system loads the packaged " +
		"/usr/lib/sysctl.d/60-sallyport.conf (or put net.ipv4.ip_forward = 1 in /etc/sysctl.d/)"
}

// Reload re-reads the config, CA, CRL and policies; on success it re-checks
// every live session. A bad new config is logged and the old one kept.
func (s *Server) Reload(why string) {
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	cur := s.snap.Load()
	old := cur.cfg
	cfg, t, err := load(old.Path, cur.trust) // what `server check` runs
	if err != nil {
		s.reloadFailed()
		s.log.Error("reload failed, keeping the running configuration", "trigger", why, "err", err)
		return
	}
	for _, w := range t.warnings {
		s.log.Error("reload: "+w, "trigger", why)
	}
	if keys := restartOnly(old, cfg); len(keys) > 0 {
		s.log.Warn("these keys changed but apply only when the gateway restarts (systemctl restart sallyport-server); their running values stay",
			"keys", strings.Join(keys, ","))
	}
	// Keys that need a restart keep their running values.
	cfg.Listen, cfg.Tunnel, cfg.Admin, cfg.Metrics.Listen, cfg.QUIC, cfg.Log.Format = old.Listen, old.Tunnel, old.Admin, old.Metrics.Listen, old.QUIC, old.Log.Format
	s.snap.Store(&snapshot{cfg: cfg, trust: t}) // one swap, before recheckSessions: see register
	s.pool.SetStatic(t.staticAddrs())
	s.log.Info("configuration reloaded", "trigger", why, "policies", len(cfg.Policies), "crl_number", fmt.Sprint(t.crlNumber()),
		"crl_next_update", fmtTime(t.crl.NextUpdate()))
	s.crlStale.Store(false) // a new CRL is judged afresh
	s.checkCRLFresh(time.Now())
	s.recheckSessions(t)
}

// checkCRLFresh logs, once per CRL, that the CRL in force is past its
// nextUpdate: with tls.crl_stale = "refuse" new sessions are refused until
// it is renewed.
func (s *Server) checkCRLFresh(now time.Time) {
	t := s.trustNow()
	if !t.crlStaleAt(now) || s.crlStale.Swap(true) {
		return
	}
	if t.crlStale == CRLStaleWarn {
		s.log.Warn("the CRL is stale; devices are still admitted (tls.crl_stale = \"warn\")", "crl", t.crlPath,
			"next_update", fmtTime(t.crl.NextUpdate()), "fix", "sallyport pki crl, then copy the new crl.pem")
		return
	}
	s.log.Error("the CRL is stale; new sessions are refused until it is renewed (tls.crl_stale = \"refuse\")", "crl", t.crlPath,
		"next_update", fmtTime(t.crl.NextUpdate()), "fix", "sallyport pki crl, then copy the new crl.pem")
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// restartOnly names the keys ([restart] in configs/server.toml) whose
// values differ between the running config a and a reloaded b, each as
// "table.key".
func restartOnly(a, b *Config) []string {
	var out []string
	if a.Listen != b.Listen {
		out = append(out, "listen")
	}
	if a.QUIC.On() != b.QUIC.On() {
		out = append(out, "quic.enabled")
	}
	out = append(out, tomlconf.Changed("tunnel", a.Tunnel, b.Tunnel)...)
	out = append(out, tomlconf.Changed("admin", a.Admin, b.Admin)...)
	if a.Metrics.Listen != b.Metrics.Listen {
		out = append(out, "metrics.listen")
	}
	if a.Log.Format != b.Log.Format {
		out = append(out, "log.format")
	}
	return out
}

// recheckSessions applies t to every live session: devices that no longer
// pass are disconnected with the reason, the rest get the new grant.
func (s *Server) recheckSessions(t *trust) {
	now := time.Now()
	for _, ss := range s.sessions() {
		ss.certMu.Lock() // a renewal moving the session waits (renew.go moveTo)
		v, err := t.decide(ss.cert.Load().peer, ss.verdict.Load(), now, forRecheck)
		if err != nil {
			ss.certMu.Unlock()
			ss.close(classify(err).reason, err)
			continue
		}
		ss.verdict.Store(&v)
		old := ss.grant.Load()
		ss.setGrant(v.grant)
		ss.certMu.Unlock()
		ss.logRecheck(old, v.grant)
		s.repushLater(ss)
	}
}

// tlsConfig builds the handshake configuration from the current trust.
// crypto/tls only checks that a certificate was sent and its key proven
// (RequireAnyClientCert); trust.decide verifies the chain and everything
// else, on full and resumed handshakes alike. A chain that does not verify
// fails the handshake (alert bad_certificate); a device that chains to a
// trusted CA but is refused completes it and is told why (handshake).
func (s *Server) tlsConfig() *tls.Config { return s.tlsConfigFor(tunnel.ALPN) }

// tlsConfigFor is tlsConfig for the TLS stream (tunnel.ALPN) or the
// datagram path's QUIC listener (masque.ALPN, quic.go), where every
// refusal fails the handshake.
func (s *Server) tlsConfigFor(alpn string) *tls.Config {
	base := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAnyClientCert,
		NextProtos: []string{alpn},
	}
	if alpn == masque.ALPN {
		// So that VerifyConnection runs, and logs and counts the refusal,
		// for a client without a certificate too: decide refuses it first
		// thing (no-cert), failing the handshake as RequireAnyClientCert
		// would. A certificate sent is still proven (CertificateVerify).
		base.ClientAuth = tls.RequestClientCert
	}
	tunnel.TLSDefaults(base)
	base.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		t := s.trustNow()
		sc, _ := hi.Conn.(*shakeConn)
		if sc != nil {
			sc.helloRead() // the whole ClientHello is in: evicted only to share the slots out
		}
		c := base.Clone()
		c.GetConfigForClient = nil
		c.Certificates = []tls.Certificate{t.cert}
		c.ClientCAs = t.caPool // named in the certificate request; not used to verify
		c.VerifyConnection = func(cs tls.ConnectionState) error {
			v, err := t.decide(cs.PeerCertificates, nil, time.Now(), forNewSession)
			if sc == nil {
				if alpn == masque.ALPN {
					return s.quicRefusal(hi, err, v.id)
				}
				return err // not from handshake: nobody would act on a verdict
			}
			sc.t, sc.v, sc.err = t, v, err
			if r, ok := err.(*refusal); ok && !r.authenticated() {
				return err
			}
			sc.certChecked() // no longer a stranger: its slot is never evicted
			return nil
		}
		return c, nil
	}
	return base
}

func (s *Server) routineAccept(ctx context.Context) {
	defer s.wg.Done()
	conf := s.tlsConfig()
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Error("accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		slot := s.admitHandshake(c)
		if slot == nil {
			continue
		}
		t0 := time.Now()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.admitted(ctx, c, conf, t0, slot)
		}()
	}
}

// handshake runs TLS and the sallyport hello/config exchange under the
// pre-authentication deadlines (preauth.go), then hands the connection to
// a new session. It takes no handshake slot (tests dial through it).
func (s *Server) handshake(ctx context.Context, raw net.Conn, conf *tls.Config) {
	s.shakingDelta(1)
	s.admitted(ctx, raw, conf, time.Now(), nil)
}

// admitted is handshake for a connection accepted at t0 and already
// counted as a handshake in flight, holding slot (admitHandshake,
// limits.go; nil: no slot).
func (s *Server) admitted(ctx context.Context, raw net.Conn, conf *tls.Config, t0 time.Time, slot *shakeSlot) {
	done := sync.OnceFunc(func() {
		if slot != nil {
			s.shakes.release(slot)
		}
		s.shakingDelta(-1)
	})
	defer done()
	cfg := s.config()
	remote := raw.RemoteAddr().String()
	tunnel.TuneTCP(raw)
	sc := newShakeConn(raw, t0, limitsOf(&cfg.TLS), &s.shakes, slot)
	conn := tls.Server(sc, conf)
	hctx, cancel := context.WithDeadline(ctx, t0.Add(cfg.TLS.HandshakeTimeout))
	err := conn.HandshakeContext(hctx)
	cancel()
	if err != nil {
		s.logRefusal(remote, s.handshakeFailure(err, sc), pki.Identity{})
		conn.Close()
		return
	}
	if sc.err != nil {
		s.refuse(conn, remote, classify(sc.err), sc.v.id)
		return
	}
	cs := conn.ConnectionState()
	if cs.NegotiatedProtocol != tunnel.ALPN {
		s.logRefusal(remote, &refusal{tunnel.ReasonHandshake, sc.v.id.Device, fmt.Errorf("client did not offer ALPN %q", tunnel.ALPN)}, sc.v.id)
		conn.Close()
		return
	}
	if s.draining.Load() {
		conn.Close()
		return
	}
	ss, err := s.newSession(conn, raw, sc.v, remote)
	if err != nil {
		var r *refusal
		if errors.As(err, &r) {
			s.refuse(conn, remote, r, sc.v.id)
			return
		}
		s.log.Warn("session refused", "remote", remote, "device", sc.v.id.Device, "user", sc.v.id.User, "error", err.Error())
		conn.Close()
		return
	}
	done() // now counted as a session
	s.track(ss)
	ss.repush() // a reload between the config and register changed the grant
	ss.run(ctx)
	s.retire(ss)
}

// refuse tells an authenticated device why it gets no session (one Close
// frame with the reason, which the laptop shows as a sentence), logs the
// refusal and closes the connection. Nothing the device sent is read.
func (s *Server) refuse(conn *tls.Conn, remote string, r *refusal, id pki.Identity) {
	s.logRefusal(remote, r, id)
	if r.authenticated() {
		if msg, err := tunnel.EncodeClose(tunnel.CloseMsg{Reason: string(r.reason)}); err == nil {
			if frame, err := tunnel.AppendFrame(nil, tunnel.FrameClose, msg); err == nil {
				_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
				_, _ = conn.Write(frame)
			}
		}
	}
	_ = conn.Close()
}

// logRefusal counts a refused handshake and logs it, at most
// refusalLogBurst lines per refusalLogWindow; the rest are summed up in one
// line when the window ends.
// id is the certificate's identity when the device sent one that parsed.
func (s *Server) logRefusal(remote string, r *refusal, id pki.Identity) {
	if s.refusals.note(time.Now(), string(r.reason)) {
		attrs := []any{"remote", remote, "reason", r.reason}
		if id.Device != "" || id.Serial != "" {
			attrs = append(attrs, identityAttrs(id)...)
		} else {
			attrs = append(attrs, "device", r.device)
		}
		s.log.Warn("handshake refused", append(attrs, "error", r.err.Error())...)
	}
}
