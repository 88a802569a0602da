package server

// The datagram path's listener: QUIC (RFC 9000) on the same port number as
// the TLS listener, over UDP, serving HTTP/3 with one handler, CONNECT-IP
// (RFC 9484; masque.go).
//
// Trust is decided exactly as for the TLS stream (ARCHITECTURE.md, "The
// trust decision"), by the same trust.decide:
//  1. at the handshake: QUIC's TLS 1.3 uses the config tlsConfigFor builds,
//     with RequireAnyClientCert and VerifyConnection calling decide. Unlike
//     the TLS stream, EVERY refusal fails the handshake: a client without a
//     certificate, with one that does not verify, or one the decision
//     refuses gets a CONNECTION_CLOSE and nothing else (no HTTP/3, no
//     datagrams). A sallyport laptop then falls back to the TLS stream,
//     which tells it the reason in a sentence. No 0-RTT (Allow0RTT off):
//     nothing is read before the handshake is complete and decided.
//  2. before the session goes live: register (session.go), as for TLS.
//  3. on every reload: recheckSessions, over all sessions whatever their
//     path; a cut datagram session is closed with the reason at once.

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/masque"
)

// QUIC transport parameters of the datagram path.
const (
	// quicPacketSize is the first (and smallest) QUIC packet size: big
	// enough that a datagram carries an IP packet of tunnel.MinDatagramMTU
	// (1280) bytes; path-MTU discovery raises it from there.
	quicPacketSize = 1350
	// quicMaxStreams bounds the request streams a device may open: one
	// CONNECT-IP request and room for a retry.
	quicMaxStreams = 4
)

// quicConn is one accepted QUIC connection, put in every request's context
// (http3.Server.ConnContext) so the CONNECT-IP handler knows whose it is.
type quicConn struct {
	conn   *quic.Conn
	v      verdict
	remote string
	used   atomic.Bool // a CONNECT-IP session was started on it
}

type quicConnKey struct{}

// quicListener serves the datagram path until closed.
type quicListener struct {
	udp   net.PacketConn
	tr    *quic.Transport
	ln    *quic.Listener
	h3    *http3.Server
	conns sync.Map // *quic.Conn -> *quicConn, while served
	wg    sync.WaitGroup
	once  sync.Once
}

// quicConfig is the QUIC configuration of the gateway (the laptop's
// mirrors it in client/quic.go): datagrams on, no 0-RTT, keepalive and
// idle timeout from the tunnel's.
func quicConfig(keepalive, timeout, handshake time.Duration) *quic.Config {
	return &quic.Config{
		EnableDatagrams:       true,
		Allow0RTT:             false,
		InitialPacketSize:     quicPacketSize,
		KeepAlivePeriod:       keepalive,
		MaxIdleTimeout:        timeout,
		HandshakeIdleTimeout:  handshake,
		MaxIncomingStreams:    quicMaxStreams,
		MaxIncomingUniStreams: quicMaxStreams,
	}
}

// startQUIC opens the UDP socket at the listen address and serves the
// datagram path on it until close.
func (s *Server) startQUIC(ctx context.Context) (*quicListener, error) {
	cfg := s.config()
	lc := net.ListenConfig{}
	udp, err := lc.ListenPacket(ctx, "udp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen %s/udp (quic.enabled): %w", cfg.Listen, err)
	}
	tr := &quic.Transport{Conn: udp, VerifySourceAddress: s.quicRetry, ConnContext: s.quicAdmit}
	ln, err := tr.Listen(s.tlsConfigFor(masque.ALPN), quicConfig(cfg.Tunnel.Keepalive, cfg.Tunnel.Timeout, cfg.TLS.HandshakeTimeout))
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("listen %s/udp: %w", cfg.Listen, err)
	}
	q := &quicListener{udp: udp, tr: tr, ln: ln}
	q.h3 = &http3.Server{
		Handler:         s.connectIPHandler(ctx),
		EnableDatagrams: true,
		MaxHeaderBytes:  16 << 10,
		Logger:          slog.New(slog.DiscardHandler),
		ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
			qc, _ := q.conns.Load(c)
			return context.WithValue(ctx, quicConnKey{}, qc)
		},
	}
	q.wg.Add(1)
	go s.routineAcceptQUIC(q)
	return q, nil
}

// close stops accepting, ends every QUIC connection (their sessions have
// been closed by then) and waits for the listener's goroutines.
func (q *quicListener) close() {
	q.once.Do(func() {
		_ = q.ln.Close()
		_ = q.h3.Close()
		q.conns.Range(func(c, _ any) bool {
			_ = c.(*quic.Conn).CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), string(tunnel.ReasonShutdown))
			return true
		})
		q.wg.Wait()
		_ = q.tr.Close()
		_ = q.udp.Close()
	})
}

// routineAcceptQUIC hands each QUIC connection whose handshake completed
// (and so passed the trust decision) to its own HTTP/3 server goroutine.
func (s *Server) routineAcceptQUIC(q *quicListener) {
	defer q.wg.Done()
	for {
		conn, err := q.ln.Accept(context.Background())
		if err != nil {
			return // listener closed
		}
		s.quicHandshakeDone(conn.Context())
		q.wg.Add(1)
		go func() {
			defer q.wg.Done()
			s.serveQUIC(q, conn)
		}()
	}
}

// serveQUIC decides the connection once more with the trust in force (the
// handshake's verdict is not carried out of quic-go) and serves HTTP/3 on
// it until it closes.
func (s *Server) serveQUIC(q *quicListener, conn *quic.Conn) {
	remote := conn.RemoteAddr().String()
	cs := conn.ConnectionState()
	if cs.Used0RTT || !cs.TLS.HandshakeComplete || cs.TLS.NegotiatedProtocol != masque.ALPN {
		_ = conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeGeneralProtocolError), "")
		return
	}
	v, err := s.trustNow().decide(cs.TLS.PeerCertificates, nil, time.Now(), forNewSession)
	if err != nil {
		s.logRefusal(remote, classify(err), v.id)
		_ = conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeRequestRejected), string(classify(err).reason))
		return
	}
	if s.draining.Load() {
		_ = conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), string(tunnel.ReasonDrain))
		return
	}
	q.conns.Store(conn, &quicConn{conn: conn, v: v, remote: remote})
	defer q.conns.Delete(conn)
	_ = q.h3.ServeQUICConn(conn)
}

// Pre-authentication limits of the datagram path. quic-go creates a
// connection (about 40 KiB, two goroutines, the TLS state) for every
// Initial packet that parses, before anything is decrypted, and keeps it
// until the handshake idle timeout: 20,000 made-up 1,200-byte Initials
// grew the gateway from 22 to 830 MiB, and UDP source addresses can be
// spoofed. So:
//   - once a quarter of tls.max_handshakes QUIC handshakes are in flight,
//     a new connection must first prove its address with a QUIC Retry
//     (RFC 9000 8.1.2; quicRetry): one round trip more for a laptop, no
//     state at all for a packet from a spoofed or silent source;
//   - QUIC handshakes take slots of a table of their own (Server.qshakes,
//     the rules of preauth.go without eviction: quic-go hands out no
//     connection to close): at most tls.max_handshakes in flight, and
//     tls.max_handshakes_per_source from one IPv4 address or IPv6 /64.
//     Past them quic-go answers CONNECTION_REFUSED (counted as
//     handshakes-full, per-source-limit) and a laptop in transport auto
//     mode falls back to the TLS stream, where strangers are evicted.
//     The slot is freed when the handshake completes or fails.

// quicSlotKey holds a QUIC connection's handshake slot in its context.
type quicSlotKey struct{}

// quicRetry is quic.Transport.VerifySourceAddress: a Retry for every new
// connection while a quarter of the handshake slots are busy.
func (s *Server) quicRetry(net.Addr) bool {
	inFlight, _, _, _ := s.qshakes.counts()
	return inFlight >= max(1, s.config().TLS.MaxHandshakes/4)
}

// quicAdmit is quic.Transport.ConnContext: a QUIC handshake takes a slot
// or the connection is refused before any state is made.
func (s *Server) quicAdmit(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	tc := s.config().TLS
	src := sourceOf(info.RemoteAddr)
	slot, refused := s.qshakes.take(src, tc.MaxHandshakes, tc.MaxHandshakesPerSource)
	if slot == nil {
		err := fmt.Errorf("%d QUIC handshakes in flight (tls.max_handshakes): connection refused", tc.MaxHandshakes)
		if refused == tunnel.ReasonPerSource {
			err = fmt.Errorf("%d QUIC handshakes in flight from %s (tls.max_handshakes_per_source): connection refused", tc.MaxHandshakesPerSource, src)
		}
		s.logRefusal(info.RemoteAddr.String(), &refusal{refused, "-", err}, pki.Identity{})
		return nil, err
	}
	context.AfterFunc(ctx, func() { s.qshakes.release(slot) }) // the handshake failed, or the connection ended
	return context.WithValue(ctx, quicSlotKey{}, slot), nil
}

// quicHandshakeDone frees the handshake slot of an accepted connection.
func (s *Server) quicHandshakeDone(ctx context.Context) {
	if slot, ok := ctx.Value(quicSlotKey{}).(*shakeSlot); ok {
		s.qshakes.release(slot)
	}
}

// quicRefusal is the VerifyConnection verdict of the QUIC listener: every
// refusal fails the handshake, and is logged and counted like a TLS one.
func (s *Server) quicRefusal(hi *tls.ClientHelloInfo, err error, id pki.Identity) error {
	if err == nil {
		return nil
	}
	remote := "-"
	if hi != nil && hi.Conn != nil && hi.Conn.RemoteAddr() != nil {
		remote = hi.Conn.RemoteAddr().String()
	}
	s.logRefusal(remote, classify(err), id)
	return err
}
