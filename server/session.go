package server

import (
	"context"
	"crypto/tls"

	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/server/conntrack"
	"github.com/sallyport/sallyport/server/policy"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/masque"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// Sizes of the per-session stream buffers. The queue of packets from the
// TUN reader (tunnel.Queue) is short on purpose (about 0.7 ms of 10
// Gbit/s): a slow device loses packets (counted as queue_full), which its
// TCP flows answer by slowing down, instead of building latency for
// everyone.
const (
	streamBufSize = 256 << 10
	conntrackMax  = 16384
	maxHelloWait  = 10 * time.Second
)

// session is one device's connection. It runs routineReadStream (device
// -> TUN) and routineWriteStream (TUN -> device) in goroutines of their
// own and routineTimers (keepalive, idle and stall timeouts, certificate
// expiry) in the goroutine that called run; close ends all three. Its big
// buffers come from shared pools per round of traffic (dataplane.go).
type session struct {
	srv  *Server
	logp atomic.Pointer[slog.Logger] // logger(): the identity on every line
	key  string                      // enrollment issuer + CN (deviceKey): one session per device
	// id is the identity the session started with: device, user and
	// groups never change (a renewal copies them); cert has the serial,
	// dates and chain in force now.
	id   pki.Identity
	cert atomic.Pointer[sessionCert] // the certificate held now (renew.go); for trust.decide on reload
	// certMu orders a renewal's move to a new certificate with the
	// re-check of the session on reload (renew.go moveTo).
	certMu sync.Mutex
	// verdict is the last trust decision for this session (its chain is
	// reused while the CAs stay the same), set by register,
	// recheckSessions and a renewal.
	verdict atomic.Pointer[verdict]
	conn    *tls.Conn  // the TLS stream; nil on the datagram path
	raw     net.Conn   // the TLS stream's TCP connection (duplicate.go transportMark)
	qc      *quic.Conn // the datagram path's QUIC connection (attach)
	// tlsState is the TLS state of the session's connection on either path
	// (renewal binds its request to it).
	tlsState func() tls.ConnectionState
	addr     netip.Addr // tunnel.Config.Address: IPv4, or IPv6 on a v6-only gateway
	addr6    netip.Addr // tunnel.Config.Address6: IPv6 on a dual-stack gateway, else zero
	remote   string
	since    time.Time
	grant    atomic.Pointer[policy.Grant]
	flows    *conntrack.Table

	w tunnel.SessionWriter // the TLS stream's *tunnel.Writer, or the datagram path's *masque.Link
	r *tunnel.Reader       // TLS stream only
	// link is the datagram path (CONNECT-IP over QUIC, masque.go) of a
	// session that came over it; nil for one on the TLS stream.
	link *masque.Link
	// hangup ends the connection: told says the device was sent a Close
	// (TLS: close_notify after it; else the socket is dropped).
	hangup  func(told bool)
	queue   *tunnel.Queue   // packets from routineReadTUN (todevice.go)
	backlog *tunnel.Backlog // unread bytes on the outer socket, for aqm
	aqm     *tunnel.AQM     // used by routineReadStream only

	gso                   bool                      // tunnel.CapGSO negotiated: FrameDataGSO both ways
	lastRecv              atomic.Int64              // unix nanos of the last frame from the device (heard)
	heardFrom             atomic.Pointer[liveProbe] // a probe waiting for the device (duplicate.go)
	probeMu               sync.Mutex
	probing               *liveProbe  // probeMu
	probeWriting          atomic.Bool // a probe's keepalive is being written
	bytesIn, bytesOut     atomic.Uint64
	packetsIn, packetsOut atomic.Uint64
	drops                 tunnel.DropCounts
	closeOnce             sync.Once
	done                  chan struct{}
	reason                atomic.Pointer[tunnel.Reason]
	push                  pushState    // what the device was last pushed (push.go)
	renew                 renewalState // renew.go
}

// path is the name of the session's path in logs and status: "tls" (the
// TLS stream) or "quic" (the datagram path).
func (ss *session) path() string {
	if ss.link != nil {
		return pathQUIC
	}
	return pathTLS
}

// Path names (SessionStatus.Path).
const (
	pathTLS  = "tls"
	pathQUIC = "quic"
)

// deviceKey names a device across connections: its CN under the issuer of
// its enrollment certificate, which a renewal (from another issuer, even
// after a CA rotation) keeps, so a renewed device keeps its address lease
// and replaces its own older session.
func deviceKey(id pki.Identity) string {
	if id.LineageIssuer != "" {
		return id.LineageIssuer + "\x00" + id.Device
	}
	return id.Issuer + "\x00" + id.Device
}

// logger is the session's logger, with the identity of the certificate it
// holds now.
func (ss *session) logger() *slog.Logger { return ss.logp.Load() }

// setCertLog makes the session's log lines carry id.
func (ss *session) setCertLog(id pki.Identity) {
	ss.logp.Store(ss.srv.log.With(append(identityAttrs(id), "remote", ss.remote)...))
}

// newSession turns an authenticated connection into a live session, in
// this order: read the device's hello, negotiate capabilities, assign its
// address, push its configuration, and register it, which decides trust
// once more against the trust in force at that moment and only then makes
// the session (and its address) visible to the data plane. An error that
// is a *refusal is told to the device by the caller.
func (s *Server) newSession(conn *tls.Conn, raw net.Conn, v verdict, remote string) (*session, error) {
	ss := &session{
		srv: s, key: deviceKey(v.id), id: v.id,
		conn: conn, raw: raw, remote: remote, since: time.Now(), flows: conntrack.New(conntrackMax),
		r:       tunnel.NewReader(conn, streamBufSize),
		queue:   tunnel.NewQueue(),
		backlog: tunnel.NewBacklog(raw),
		aqm:     tunnel.NewAQM(),
		done:    make(chan struct{}),
	}
	tw := tunnel.NewWriter(conn, streamBufSize)
	ss.w = tw
	ss.hangup = func(told bool) {
		if told {
			_ = conn.Close() // with TLS close_notify
		} else {
			// A device that does not read would hold tls.Conn.Close for
			// seconds in close_notify: drop the socket.
			_ = conn.NetConn().Close()
		}
	}
	ss.renew.moved = make(chan struct{}, 1)
	ss.tlsState = conn.ConnectionState
	ss.cert.Store(&sessionCert{id: v.id, peer: conn.ConnectionState().PeerCertificates})
	ss.setCertLog(v.id)
	ss.grant.Store(v.grant)
	ss.verdict.Store(&v)
	ss.lastRecv.Store(time.Now().UnixNano())

	hello, err := ss.readHello()
	if err != nil {
		return nil, err
	}
	if err := s.checkDuplicate(ss); err != nil { // duplicate.go
		return nil, err
	}
	if err := s.sessionSlot(ss); err != nil { // early, so the device gets no config first; register decides
		return nil, err
	}
	caps := ss.negotiate(hello, true)
	if err := ss.assign(s.trustNow()); err != nil {
		return nil, err
	}
	if err := ss.pushConfig(caps); err != nil {
		s.pool.Release(ss.key, ss.addr, ss.addr6)
		return nil, err
	}
	if err := s.register(ss); err != nil {
		s.pool.Release(ss.key, ss.addr, ss.addr6)
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	tw.SetTimeout(conn, s.config().Tunnel.Timeout) // from now on a device that stops reading is "stalled"
	ss.logger().Info("session up", "path", pathTLS, "address", ss.addr.String(), "address6", addrString(ss.addr6), "policies", ss.grant.Load().Names, "gso", ss.gso,
		"expires", ss.expiry().Format(time.RFC3339), "software", hello.Software)
	return ss, nil
}

// readHello reads and checks the device's first frame.
func (ss *session) readHello() (tunnel.Hello, error) {
	typ, payload, err := ss.r.Next()
	if err != nil {
		return tunnel.Hello{}, fmt.Errorf("read hello: %w", err)
	}
	if typ != tunnel.FrameHello {
		return tunnel.Hello{}, fmt.Errorf("first frame is type %#x, want hello", typ)
	}
	hello, err := tunnel.DecodeHello(payload)
	if err != nil {
		return tunnel.Hello{}, fmt.Errorf("decode hello: %w", err)
	}
	if hello.Version != tunnel.ProtocolVersion {
		return tunnel.Hello{}, fmt.Errorf("client speaks protocol version %d, gateway %d", hello.Version, tunnel.ProtocolVersion)
	}
	return hello, nil
}

// negotiate picks the capabilities both ends use. gso only on the stream:
// a datagram carries one packet of the path's size.
func (ss *session) negotiate(hello tunnel.Hello, stream bool) []string {
	var caps []string
	if _, ok := tunnel.AsVnet(ss.srv.dev); ok && stream && tunnel.HasCap(hello.Caps, tunnel.CapGSO) {
		caps = append(caps, tunnel.CapGSO)
		ss.gso = true
	}
	if tunnel.HasCap(hello.Caps, tunnel.CapPush) {
		caps = append(caps, tunnel.CapPush)
	}
	if t := ss.srv.trustNow(); t.renew != nil && tunnel.HasCap(hello.Caps, tunnel.CapRenew) && t.renew.renews(ss.verdict.Load().chain) {
		caps = append(caps, tunnel.CapRenew)
		ss.renew.offered = true
	}
	return caps
}

// assign takes the device's tunnel address: its static one, its lease, or
// a free one. An exhausted pool is a refusal the device is told about.
func (ss *session) assign(t *trust) error {
	addr, addr6, err := ss.srv.pool.Acquire(ss.key, t.staticFor(ss.id))
	if errors.Is(err, errPoolExhausted) {
		return &refusal{tunnel.ReasonPoolExhausted, ss.id.Device, fmt.Errorf("assign address: %w", err)}
	}
	if err != nil {
		return fmt.Errorf("assign address: %w", err)
	}
	ss.addr, ss.addr6 = addr, addr6
	return nil
}

// pushConfig sends the device its tunnel configuration (on the datagram
// path also as ADDRESS_ASSIGN and ROUTE_ADVERTISEMENT, masque.go).
func (ss *session) pushConfig(caps []string) error {
	c := ss.config(caps)
	b, err := tunnel.EncodeConfig(c)
	if err == nil && ss.link != nil {
		err = ss.advertise(c)
	}
	if err == nil {
		err = ss.w.WriteControl(tunnel.FrameConfig, b)
	}
	if err != nil {
		return fmt.Errorf("push config: %w", err)
	}
	ss.push.sent(caps, c)
	return nil
}

// config is the tunnel configuration for the device now: the first
// FrameConfig and every live push (push.go) are built here.
func (ss *session) config(caps []string) tunnel.Config {
	cfg := ss.srv.config()
	g := ss.grant.Load()
	pool := ss.srv.pool.primary()
	tc := tunnel.Config{
		Version:       tunnel.ProtocolVersion,
		Caps:          caps,
		Address:       netip.PrefixFrom(ss.addr, pool.prefix.Bits()),
		Gateway:       pool.gateway,
		Routes:        g.Routes,
		DNS:           g.DNS,
		SearchDomains: g.SearchDomains,
		KillSwitch:    g.KillSwitch,
		MTU:           cfg.Tunnel.MTU,
		Keepalive:     cfg.Tunnel.Keepalive,
		Timeout:       cfg.Tunnel.Timeout,
	}
	if rn := ss.srv.trustNow().renew; rn != nil && ss.renew.offered {
		tc.RenewAt = rn.renewAt
	}
	if ss.addr6.IsValid() {
		tc.Address6 = netip.PrefixFrom(ss.addr6, ss.srv.pool.v6.prefix.Bits())
		tc.Gateway6 = ss.srv.pool.v6.gateway
	}
	return tc
}

// register decides trust once more against the trust in force and makes
// ss the device's one session, publishing its address to the TUN
// dispatcher. An older session of the same device is replaced.
//
// Why this cannot miss a reload: Reload stores the new trust and only then
// takes sessMu to list the sessions it re-checks. register decides with
// trust T and inserts under sessMu only if T is still in force; so either
// the insert comes first and the reload's list has the session, or the
// store comes first and register decides again with the new trust.
func (s *Server) register(ss *session) error {
	for {
		t := s.trustNow()
		v, err := t.decide(ss.cert.Load().peer, ss.verdict.Load(), time.Now(), forNewSession)
		if err != nil {
			return err
		}
		s.sessMu.Lock()
		if s.trustNow() != t {
			s.sessMu.Unlock()
			continue
		}
		if err := s.sessionSlotLocked(ss); err != nil {
			s.sessMu.Unlock()
			return err
		}
		ss.verdict.Store(&v)
		ss.grant.Store(v.grant)
		old := s.byKey[ss.key]
		s.byKey[ss.key] = ss
		s.byAddr.store(ss.addr, ss)
		s.byAddr.store(ss.addr6, ss)
		s.rescaleLocked()
		s.sessMu.Unlock()
		if old != nil {
			old.logger().Info("session replaced by a new connection of the same device", "reason", tunnel.ReasonReplaced, "policies", old.grant.Load().Names, "new_remote", ss.remote)
			old.close(tunnel.ReasonReplaced, nil)
		}
		return nil
	}
}

// unregister removes ss if it is still the device's current session.
func (s *Server) unregister(ss *session) {
	s.sessMu.Lock()
	if s.byKey[ss.key] == ss {
		delete(s.byKey, ss.key)
	}
	if s.byAddr.lookup(ss.addr) == ss {
		s.byAddr.store(ss.addr, nil)
		if s.byAddr.lookup(ss.addr6) == ss {
			s.byAddr.store(ss.addr6, nil)
		}
		s.pool.Release(ss.key, ss.addr, ss.addr6)
	}
	s.rescaleLocked()
	s.sessMu.Unlock()
}

func (s *Server) sessions() []*session {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	out := make([]*session, 0, len(s.byKey))
	for _, ss := range s.byKey {
		out = append(out, ss)
	}
	return out
}

func (s *Server) closeAll(reason tunnel.Reason) {
	for _, ss := range s.sessions() {
		ss.close(reason, nil)
	}
}

// setGrant applies a reloaded policy to the live session and forgets flows
// the new policy no longer allows.
func (ss *session) setGrant(g *policy.Grant) {
	ss.grant.Store(g)
	pruned := ss.flows.Prune(func(f conntrack.Flow) bool {
		return g.Allows(&packet.Info{Proto: f.Proto, Src: f.Src, Dst: f.Dst, SrcPort: f.SrcPort, DstPort: f.DstPort})
	})
	if pruned > 0 {
		ss.logger().Info("policy reloaded, flows no longer allowed dropped", "flows", pruned, "policies", g.Names)
	}
}

// run runs the session: its stream goroutines and, in the caller's
// goroutine, its timers. It returns when all have ended.
func (ss *session) run(ctx context.Context) {
	var wg sync.WaitGroup
	if ss.link != nil {
		ss.startDatagrams(&wg) // masque.go
	} else {
		wg.Go(ss.routineReadStream)
	}
	wg.Go(ss.routineWriteStream)
	ss.routineTimers(ctx)
	wg.Wait()
	tunnel.DrainQueue(ss.queue)
}

// closeWrite ends the session after a failed write to the device: a write
// that hit its deadline means the device stopped reading.
func (ss *session) closeWrite(err error) {
	if errors.Is(err, tunnel.ErrStalled) {
		ss.close(tunnel.ReasonStalled, err)
		return
	}
	ss.close(tunnel.ReasonError, err)
}

// close ends the session once: it tells the device why (best effort,
// within a second even when a write to it is blocked), closes the stream
// and unregisters. Safe to call from any goroutine.
func (ss *session) close(reason tunnel.Reason, err error) {
	ss.closeOnce.Do(func() {
		ss.reason.Store(&reason)
		ss.srv.unregister(ss)
		close(ss.done)
		told := false
		if reason.Told() {
			if msg, e := tunnel.EncodeClose(tunnel.CloseMsg{Reason: string(reason)}); e == nil {
				told = ss.w.Finish(tunnel.FrameClose, msg, time.Second) == nil
			}
		}
		ss.hangup(told)
		attrs := []any{"reason", reason, "path", ss.path(), "policies", ss.grant.Load().Names, "address", ss.addr.String(), "address6", addrString(ss.addr6), "duration", time.Since(ss.since).Round(time.Second).String(),
			"bytes_in", ss.bytesIn.Load(), "bytes_out", ss.bytesOut.Load()}
		if err != nil {
			attrs = append(attrs, "error", err.Error())
		}
		ss.logger().Info("session closed", attrs...)
	})
}

// watchdog is the timer's verdict on a session, from how long a write to
// the device has been blocked (busy, 0 when none is) and how long nothing
// came from it (idle): stalled when a write has been blocked longer than
// timeout, or the device is silent that long while a write to it is
// blocked; timeout when it is silent that long otherwise; "" to go on. It
// does not rely on the write deadline (which cuts a blocked write by
// itself): either one alone ends a stalled session (TestStalledDevice).
// A variable so that test can switch it off.
var watchdog = func(busy, idle, timeout time.Duration) tunnel.Reason {
	switch {
	case busy > timeout, idle > timeout && busy > 0:
		return tunnel.ReasonStalled
	case idle > timeout:
		return tunnel.ReasonTimeout
	}
	return ""
}

// routineTimers sends keepalives, drops a silent or stalled device and
// ends the session when the device certificate expires. It never waits
// for the stream's writer: keepalives go only when no write is in
// progress (one that is in progress carries traffic anyway), and a write
// blocked past the session timeout, or a device silent while a write to
// it is blocked, is a stall.
func (ss *session) routineTimers(ctx context.Context) {
	cfg := ss.srv.config()
	tick := time.NewTicker(cfg.Tunnel.Keepalive)
	defer tick.Stop()
	expiry := time.NewTimer(time.Until(ss.expiry()))
	defer expiry.Stop()
	for {
		select {
		case <-ss.done:
			return
		case <-ss.renew.moved: // a renewal: the new certificate's expiry
			expiry.Reset(time.Until(ss.expiry()))
		case <-ctx.Done():
			ss.close(tunnel.ReasonShutdown, nil)
			return
		case <-expiry.C:
			ss.close(tunnel.ReasonExpired, fmt.Errorf("certificate chain expired at %s", ss.expiry().Format(time.RFC3339)))
			return
		case now := <-tick.C:
			if ss.link != nil {
				continue // QUIC keeps the path alive and times it out itself (quic.go)
			}
			busy := ss.w.Busy(now)
			idle := now.Sub(time.Unix(0, ss.lastRecv.Load()))
			switch watchdog(busy, idle, cfg.Tunnel.Timeout) {
			case tunnel.ReasonStalled:
				ss.close(tunnel.ReasonStalled, fmt.Errorf("write to the device blocked for %s, nothing received for %s",
					busy.Round(time.Millisecond), idle.Round(time.Millisecond)))
				return
			case tunnel.ReasonTimeout:
				ss.close(tunnel.ReasonTimeout, fmt.Errorf("nothing received for %s", idle.Round(time.Second)))
				return
			}
			if _, err := ss.w.TryWriteControl(tunnel.FrameKeepalive, nil); err != nil {
				ss.closeWrite(fmt.Errorf("send keepalive: %w", err))
				return
			}
		}
	}
}

// expiry is when the session's certificate chain stops being valid: the
// earliest NotAfter of the leaf and its issuing CAs.
func (ss *session) expiry() time.Time {
	end := ss.cert.Load().id.NotAfter
	for _, c := range ss.verdict.Load().chain {
		if c.NotAfter.Before(end) {
			end = c.NotAfter
		}
	}
	return end
}

// onControl handles control frames from the device.
func (ss *session) onControl(typ byte, payload []byte) error {
	switch typ {
	case tunnel.FrameKeepalive:
		ss.heard(time.Now()) // a probe's answer too (duplicate.go)
		return nil
	case tunnel.FrameClose: // a device leaving: not an answer to a probe
		m, err := tunnel.DecodeClose(payload)
		if err != nil {
			return fmt.Errorf("close frame from device: %w", err)
		}
		return &peerClosed{m.Reason}
	case tunnel.FrameRenew:
		ss.heard(time.Now())
		return ss.onRenew(payload)
	default:
		return fmt.Errorf("unexpected control frame %#x from device", typ)
	}
}

// peerClosed is the device's Close frame: reason is what it said
// (tunnel.LaptopReasons from a sallyport laptop).
type peerClosed struct{ reason string }

func (p *peerClosed) Error() string { return "device closed the session: " + p.reason }

// closedByDevice ends a session whose device sent a Close frame, on either
// path: peer-closed, with what the device said logged (debug).
func (ss *session) closedByDevice(pc *peerClosed) {
	ss.logger().Debug("device closed the session", "reason", pc.reason)
	ss.close(tunnel.ReasonPeerClosed, nil)
}

// status is one row of `sallyport server status`.
func (ss *session) status() SessionStatus {
	g := ss.grant.Load()
	c := ss.cert.Load().id
	return SessionStatus{
		Device: ss.id.Device, User: ss.id.User, Groups: ss.id.Groups, Issuer: c.Issuer,
		Serial: c.Serial, Path: ss.path(), Address: ss.addr.String(), Address6: addrString(ss.addr6), Remote: ss.remote, Policies: g.Names,
		Since: ss.since, BytesIn: ss.bytesIn.Load(), BytesOut: ss.bytesOut.Load(),
		PacketsIn: ss.packetsIn.Load(), PacketsOut: ss.packetsOut.Load(), Flows: ss.flows.Len(),
		CertNotAfter: c.NotAfter, Lineage: c.Lineage, CA: ss.anchor(), Renewals: int(ss.renew.count.Load()),
		Renewal: ss.renew.offered,
		Dropped: dropStatus(&ss.drops),
	}
}

// anchor is the subject of the CA the session's chain ends at.
func (ss *session) anchor() string {
	chain := ss.verdict.Load().chain
	if len(chain) == 0 {
		return ""
	}
	return chain[len(chain)-1].Subject.String()
}

// holds reports whether a (a valid address) is one of ss's tunnel addresses.
func (ss *session) holds(a netip.Addr) bool { return ss.addr == a || ss.addr6 == a }

// addrString is a.String(), or "" for the zero address (no IPv6 address).
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
