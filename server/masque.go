package server

// The datagram path's sessions: CONNECT-IP (RFC 9484) requests on the QUIC
// listener (quic.go). A device is one session whatever its path: the same
// key, lease, address, policy, conntrack, counters and close reasons as on
// the TLS stream, in the same table (byKey/byAddr), decided by the same
// register and recheckSessions. Only how bytes move differs:
//
//   setup     newDatagramSession: the hello comes in the request header
//             (masque.HelloHeader; a plain CONNECT-IP client sends none and
//             gets no capabilities), then the steps of newSession: the
//             duplicate-device rule (duplicate.go), session slot, address, 200 + capsules (ADDRESS_ASSIGN,
//             ROUTE_ADVERTISEMENT, the sallyport config), register.
//   device -> LAN  routineReadDatagrams: masque.Link.Wait waits for a
//             datagram holding no batch; then, with a batch from the shared
//             pool, the session's tunnel.Inbound (dataplane.go inbound)
//             takes the datagrams that arrived as one batch
//             (ReadDatagrams) and decides and writes them exactly as it
//             does the TLS stream's, with the same verdict (verdict.go),
//             without AQM (datagrams queue nowhere).
//   LAN -> device  routineWriteStream (todevice.go), unchanged: tunnel.Round
//             writes to the Link (one datagram per packet; super-packets
//             segmented as for a peer without gso). A packet larger than
//             the datagram the path takes gets ICMP Packet Too Big /
//             Fragmentation Needed back to its sender (tooBig).
//   control   routineReadCapsules: sallyport control frames in
//             CapsuleSallyport (close), ADDRESS_REQUEST answered with the
//             session's addresses; other capsules skipped (RFC 9297).

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	connectip "github.com/quic-go/connect-ip-go"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/yosida95/uritemplate/v3"

	"github.com/sallyport/sallyport/server/conntrack"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/masque"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// tooBigEvery is the least time between two ICMP "too big" errors one
// session sends (a flood of oversize packets gets one error per 10 ms, as
// a router rate-limits its ICMP).
const tooBigEvery = 10 * time.Millisecond

// connectIPHandler serves CONNECT-IP requests on a QUIC connection that
// passed the trust decision; everything else gets 404.
func (s *Server) connectIPHandler(ctx context.Context) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		qc, _ := r.Context().Value(quicConnKey{}).(*quicConn)
		if qc == nil {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		if r.URL.Path != masque.Path {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		tmpl, err := uritemplate.New("https://" + r.Host + masque.Path)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if _, err := connectip.ParseProxyRequest(r, tmpl); err != nil {
			status := http.StatusBadRequest
			if pe, ok := errors.AsType[*connectip.ProxyRequestParseError](err); ok {
				status = pe.HTTPStatus
			}
			w.WriteHeader(status)
			return
		}
		if qc.used.Swap(true) { // one session per QUIC connection
			w.WriteHeader(http.StatusConflict)
			return
		}
		s.serveConnectIP(ctx, w, r, qc)
	})
}

// serveConnectIP runs one datagram session for the request's lifetime.
func (s *Server) serveConnectIP(ctx context.Context, w http.ResponseWriter, r *http.Request, qc *quicConn) {
	hello := tunnel.Hello{Version: tunnel.ProtocolVersion}
	if h := r.Header.Get(masque.HelloHeader); h != "" {
		var err error
		if hello, err = tunnel.DecodeHello([]byte(h)); err != nil || hello.Version != tunnel.ProtocolVersion {
			if err == nil {
				err = fmt.Errorf("client speaks protocol version %d, gateway %d", hello.Version, tunnel.ProtocolVersion)
			}
			s.log.Warn("session refused", "path", pathQUIC, "remote", qc.remote, "device", qc.v.id.Device, "error", err.Error())
			w.WriteHeader(http.StatusBadRequest)
			return
		}
	}
	ss, caps, err := s.newDatagramSession(qc, hello)
	if err != nil {
		s.refuseDatagram(w, qc, err)
		return
	}
	w.Header().Set(http3.CapsuleProtocolHeader, "?1")
	w.WriteHeader(http.StatusOK)
	str, err := w.(http3.HTTPStreamer).HTTPStream()
	if err != nil {
		s.pool.Release(ss.key, ss.addr, ss.addr6)
		_ = qc.conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeInternalError), "")
		return
	}
	link := masque.NewLink(str)
	link.Direct(qc.conn, str.StreamID())
	ss.attach(link, qc.conn)
	if err := ss.pushConfig(caps); err != nil {
		s.pool.Release(ss.key, ss.addr, ss.addr6)
		ss.hangup(false)
		return
	}
	if err := s.register(ss); err != nil {
		s.pool.Release(ss.key, ss.addr, ss.addr6)
		r := classify(err)
		s.logRefusal(qc.remote, r, ss.id)
		if msg, e := tunnel.EncodeClose(tunnel.CloseMsg{Reason: string(r.reason)}); e == nil {
			_ = ss.w.Finish(tunnel.FrameClose, msg, time.Second)
		}
		ss.hangup(true)
		return
	}
	ss.link.SetTimeout(s.config().Tunnel.Timeout)
	ss.logger().Info("session up", "path", pathQUIC, "address", ss.addr.String(), "address6", addrString(ss.addr6), "policies", ss.grant.Load().Names,
		"expires", ss.expiry().Format(time.RFC3339), "software", hello.Software, "max_packet", masque.MaxPacket(qc.conn))
	s.track(ss)
	ss.repush() // a reload between the config and register changed the grant
	ss.run(ctx)
	s.retire(ss)
}

// refuseDatagram answers a CONNECT-IP request of a device that gets no
// session: 403 (503 for capacity and address pool) with the reason in
// ReasonHeader, logged like a refused TLS session, then closes the
// connection.
func (s *Server) refuseDatagram(w http.ResponseWriter, qc *quicConn, err error) {
	var r *refusal
	if !errors.As(err, &r) {
		s.log.Warn("session refused", "path", pathQUIC, "remote", qc.remote, "device", qc.v.id.Device, "error", err.Error())
		w.WriteHeader(http.StatusInternalServerError)
		_ = qc.conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeInternalError), "")
		return
	}
	s.logRefusal(qc.remote, r, qc.v.id)
	status := http.StatusForbidden
	if r.reason == tunnel.ReasonCapacity || r.reason == tunnel.ReasonPoolExhausted {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set(masque.ReasonHeader, string(r.reason))
	w.WriteHeader(status)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	_ = qc.conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeRequestRejected), string(r.reason))
}

// newDatagramSession is newSession for the datagram path, up to the
// address: the session is not yet attached to a stream or registered.
func (s *Server) newDatagramSession(qc *quicConn, hello tunnel.Hello) (*session, []string, error) {
	v := qc.v
	ss := &session{
		srv: s, key: deviceKey(v.id), id: v.id,
		remote: qc.remote, since: time.Now(), flows: conntrack.New(conntrackMax),
		queue: tunnel.NewQueue(), aqm: tunnel.NewAQM(), done: make(chan struct{}),
	}
	ss.renew.moved = make(chan struct{}, 1)
	ss.tlsState = func() tls.ConnectionState { return qc.conn.ConnectionState().TLS }
	ss.cert.Store(&sessionCert{id: v.id, peer: qc.conn.ConnectionState().TLS.PeerCertificates})
	ss.setCertLog(v.id)
	ss.grant.Store(v.grant)
	ss.verdict.Store(&v)
	ss.lastRecv.Store(time.Now().UnixNano())
	if err := s.checkDuplicate(ss); err != nil { // duplicate.go
		return nil, nil, err
	}
	if err := s.sessionSlot(ss); err != nil {
		return nil, nil, err
	}
	caps := ss.negotiate(hello, false)
	if err := ss.assign(s.trustNow()); err != nil {
		return nil, nil, err
	}
	return ss, caps, nil
}

// attach makes link the session's path to its device.
func (ss *session) attach(link *masque.Link, conn *quic.Conn) {
	ss.link = link
	ss.qc = conn
	ss.w = link
	var last atomic.Int64
	link.TooBig = func(pkt []byte, mtu int) {
		now := time.Now().UnixNano()
		if l := last.Load(); now-l < int64(tooBigEvery) || !last.CompareAndSwap(l, now) {
			return
		}
		ss.srv.tooBig(pkt, mtu)
	}
	var once sync.Once
	ss.hangup = func(told bool) {
		once.Do(func() {
			reason := "closed"
			if p := ss.reason.Load(); p != nil {
				reason = string(*p)
			}
			_ = conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), reason)
		})
	}
}

// tooBig answers a packet from the LAN that is larger than a device's
// datagram path takes (mtu) with an ICMP error from the gateway's tunnel
// address to its sender, written to the TUN like any packet for the LAN.
func (s *Server) tooBig(pkt []byte, mtu int) {
	var from netip.Addr
	for _, gw := range s.pool.Gateways() {
		if gw.Addr().Is4() == (len(pkt) > 0 && pkt[0]>>4 == 4) {
			from = gw.Addr()
		}
	}
	b, ok := packet.AppendTooBig(make([]byte, tunnel.Headroom, tunnel.Headroom+1280), pkt, mtu, from)
	if !ok {
		return
	}
	if _, err := s.dev.Write([][]byte{b}, tunnel.Headroom); err != nil {
		s.log.Debug("write ICMP too-big to the TUN failed", "err", err)
	}
}

// advertise tells any CONNECT-IP client its addresses and the routes of
// c (ADDRESS_ASSIGN, ROUTE_ADVERTISEMENT).
func (ss *session) advertise(c tunnel.Config) error {
	addrs := ss.assigned(0)
	if err := ss.link.WriteCapsule(masque.CapsuleAddressAssign, masque.AppendAddresses(nil, addrs)); err != nil {
		return err
	}
	return ss.link.WriteCapsule(masque.CapsuleRouteAdvertisement, masque.AppendRoutes(nil, masque.Routes(c.Routes)))
}

// assigned is the session's addresses as ADDRESS_ASSIGN entries (host
// prefixes, RFC 9484 4.7.1) under request ID id.
func (ss *session) assigned(id uint64) []masque.Address {
	var out []masque.Address
	for _, a := range []netip.Addr{ss.addr, ss.addr6} {
		if a.IsValid() {
			out = append(out, masque.Address{RequestID: id, Prefix: netip.PrefixFrom(a, a.BitLen())})
		}
	}
	return out
}

// startDatagrams starts the goroutines of a datagram session (run waits
// for them through wg): the device -> LAN loop and the capsule reader.
// Both end when the session closes its QUIC connection.
func (ss *session) startDatagrams(wg *sync.WaitGroup) {
	wg.Go(ss.routineReadDatagrams)
	wg.Go(ss.routineReadCapsules)
}

// routineReadDatagrams filters and forwards what the device sends on the
// datagram path, one batch of what arrived at a time. It waits for a
// datagram holding no batch and takes one from the shared pool only then,
// giving it back after the round, so an idle session holds none (as
// routineReadStream).
func (ss *session) routineReadDatagrams() {
	pool := &ss.srv.dataPools().stream
	in := ss.inbound(nil)
	for {
		err := ss.link.Wait()
		if err == nil {
			in.MTU = ss.srv.config().Tunnel.MTU
			b := pool.Get()
			var res tunnel.InboundResult
			res, err = in.ReadDatagrams(ss.link, b)
			pool.Put(b)
			if res.Packets > 0 {
				ss.heard(time.Now())
			}
			ss.received(res)
		}
		if err != nil {
			ss.close(tunnel.ReasonPeerClosed, nil)
			return
		}
	}
}

// routineReadCapsules reads the request stream: the device's control
// frames (close) and address requests. Its end is the session's.
func (ss *session) routineReadCapsules() {
	for {
		typ, v, err := ss.link.NextCapsule()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || !errors.Is(err, masque.ErrFormat) {
				ss.close(tunnel.ReasonPeerClosed, nil)
			} else {
				ss.close(tunnel.ReasonError, err)
			}
			return
		}
		if typ != masque.CapsuleSallyport {
			ss.heard(time.Now()) // sallyport's frames: onControl (a Close is no answer)
		}
		switch typ {
		case masque.CapsuleSallyport:
			ft, payload, err := masque.ParseFrame(v)
			if err == nil {
				err = ss.onControl(ft, payload)
			}
			if pc, ok := errors.AsType[*peerClosed](err); ok {
				ss.closedByDevice(pc)
				return
			}
			if err != nil {
				ss.close(tunnel.ReasonError, err)
				return
			}
		case masque.CapsuleAddressRequest:
			reqs, err := masque.ParseAddresses(v, true)
			if err != nil {
				ss.close(tunnel.ReasonError, err)
				return
			}
			// Whatever was asked, the device gets its own addresses.
			var out []masque.Address
			for _, rq := range reqs {
				for _, a := range ss.assigned(rq.RequestID) {
					if a.Prefix.Addr().Is4() == rq.Prefix.Addr().Is4() {
						out = append(out, a)
					}
				}
			}
			if err := ss.link.WriteCapsule(masque.CapsuleAddressAssign, masque.AppendAddresses(nil, out)); err != nil {
				ss.close(tunnel.ReasonError, err)
				return
			}
		}
	}
}
