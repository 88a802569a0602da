package client

// The laptop's datagram path: CONNECT-IP (RFC 9484) over HTTP/3 over QUIC
// to the gateway's listen port over UDP, with the same device certificate
// and the same checks of the gateway's (tlsConfig, verifyGateway).
//
//   open       happy eyeballs (transport.mode = "auto"): the QUIC handshake
//              starts first; the TLS stream's starts too when QUIC failed
//              or after transport.fallback_after; whichever completes first
//              carries the session, the other is closed. Only transports
//              race: the session itself (hello, or the CONNECT-IP request)
//              is set up on the winner alone, so the gateway never sees two.
//   session    sessionQUIC: the CONNECT-IP request with the hello in a
//              header, then the capsules up to sallyport's config; the TUN's
//              MTU is the pushed one capped by what a datagram carries now
//              (at least 1280), raised as quic-go's path-MTU discovery finds
//              more (routineQUICTimers).
//   egress     routineSend (sendq.go) unchanged: tunnel.Round writes to the
//              masque.Link, one datagram per packet; a packet larger than
//              the path takes is answered with ICMP Packet Too Big /
//              Fragmentation Needed on the TUN (tooBig).
//   ingress    readDatagrams: tunnel.Inbound.ReadDatagrams takes what
//              arrived on the Link as one batch and writes it to the TUN
//              (order kept, GRO), as readStream's Inbound does the stream's.
//   control    readCapsules: push and close frames as on the stream.
//   retry      while on the TLS stream after a fallback, routineRetryUDP
//              tries the QUIC handshake every transport.retry_udp; when it
//              works the stream session ends and the next one takes the
//              ready QUIC connection.

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/masque"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// MinDatagramMTU is the least tunnel MTU the datagram path accepts (the
// IPv6 minimum link MTU); a path that cannot carry it falls back to the
// TLS stream.
const MinDatagramMTU = 1280

// quicPacketSize is the first QUIC packet size (as the gateway's): a
// datagram then carries about 1300 bytes of IP packet; path-MTU discovery
// raises it.
const quicPacketSize = 1350

// Path names in Status.
const (
	PathQUIC = "quic"
	PathTLS  = "tls"
)

// errUpgrade ends a TLS stream session because the datagram path works
// again (routineRetryUDP); the next session starts at once on it.
var errUpgrade = errors.New("the datagram path (UDP) works again: moving the session to it")

// quicPath is a QUIC connection to a gateway whose handshake (and the
// gateway's checks) completed, ready for the CONNECT-IP request.
type quicPath struct {
	addr string
	m    *material // the identity the handshake used
	udp  net.PacketConn
	tr   *quic.Transport
	qc   *quic.Conn
	h3   *http3.ClientConn
	once sync.Once
}

// close ends the connection and its socket.
func (q *quicPath) close(why string) {
	q.once.Do(func() {
		_ = q.qc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), why)
		_ = q.tr.Close()
		_ = q.udp.Close()
	})
}

// opened is the winner of open: a TLS stream or a QUIC connection.
type opened struct {
	tls  *tlsDial
	quic *quicPath
}

// tlsDial is a TLS stream whose handshake completed.
type tlsDial struct {
	conn *tls.Conn
	addr string
}

// open connects to a gateway by the configured transport mode, and
// records which path won and why (Status.Path, PathReason).
func (c *Client) open(ctx context.Context, m *material) (opened, error) {
	switch c.cfg.Transport.Mode {
	case TransportTLS:
		tc, addr, err := c.dial(ctx, m)
		if err != nil {
			return opened{}, err
		}
		c.setPath(PathTLS, "transport.mode is \"tls\"")
		return opened{tls: &tlsDial{tc, addr}}, nil
	case TransportQUIC:
		q, err := c.dialQUIC(ctx, m)
		if err != nil {
			return opened{}, err
		}
		c.setPath(PathQUIC, "transport.mode is \"quic\"")
		return opened{quic: q}, nil
	}
	if q := c.upgrade.Swap(nil); q != nil {
		if q.qc.Context().Err() == nil && q.m == m {
			c.setPath(PathQUIC, "the datagram path (UDP) works again")
			return opened{quic: q}, nil
		}
		q.close("stale")
	}
	return c.race(ctx, func(ctx context.Context) (opened, error) {
		q, err := c.dialQUIC(ctx, m)
		return opened{quic: q}, err
	}, func(ctx context.Context) (opened, error) {
		tc, addr, err := c.dial(ctx, m)
		return opened{tls: &tlsDial{tc, addr}}, err
	})
}

// race is happy eyeballs between the datagram path (dialQ) and the TLS
// stream (dialT): QUIC first, TLS too once QUIC failed or after
// fallback_after, the first up wins and the other is closed when it
// completes. When both fail the TLS stream's error is returned: a gateway
// that refuses the device says why only there.
func (c *Client) race(ctx context.Context, dialQ, dialT func(context.Context) (opened, error)) (opened, error) {
	type result struct {
		o   opened
		err error
	}
	// Cancelling a dial's context after it completed leaves the
	// connection alone (quic-go, net.Dialer and tls.Conn use it for the
	// handshake only); the loser still dialing gives up.
	qctx, qcancel := context.WithCancel(ctx)
	defer qcancel()
	tctx, tcancel := context.WithCancel(ctx)
	defer tcancel()
	qres, tres := make(chan result, 1), make(chan result, 1)
	go func() {
		o, err := dialQ(qctx)
		qres <- result{o, err}
	}()
	// The loser, if it completes, is closed; its goroutine always ends.
	discard := func(ch chan result) {
		go func() {
			if r := <-ch; r.err == nil {
				r.o.close()
			}
		}()
	}
	timer := time.NewTimer(c.cfg.Transport.FallbackAfter)
	defer timer.Stop()
	var quicErr, tlsErr error
	select {
	case r := <-qres:
		if r.err == nil {
			tcancel()
			c.setPath(PathQUIC, "the datagram path (UDP) is up")
			return r.o, nil
		}
		quicErr, qres = r.err, nil
	case <-timer.C:
	case <-ctx.Done():
		qcancel()
		tcancel()
		discard(qres)
		return opened{}, ctx.Err()
	}
	go func() {
		o, err := dialT(tctx)
		tres <- result{o, err}
	}()
	for {
		select {
		case r := <-qres:
			if r.err == nil {
				tcancel()
				discard(tres)
				c.setPath(PathQUIC, "the datagram path (UDP) is up")
				return r.o, nil
			}
			quicErr, qres = r.err, nil
		case r := <-tres:
			if r.err == nil {
				why := fmt.Sprintf("UDP gave no answer within %s", c.cfg.Transport.FallbackAfter)
				if quicErr != nil {
					why = "UDP failed: " + quicErr.Error()
				}
				if qres != nil {
					qcancel()
					discard(qres)
				}
				c.setPath(PathTLS, why)
				return r.o, nil
			}
			tres, tlsErr = nil, r.err
		case <-ctx.Done():
			qcancel()
			tcancel()
			if qres != nil {
				discard(qres)
			}
			if tres != nil {
				discard(tres)
			}
			return opened{}, ctx.Err()
		}
		if qres == nil && tres == nil { // both failed
			c.log.Debug("the datagram path (UDP) failed too", "err", quicErr)
			return opened{}, tlsErr
		}
	}
}

// close closes whichever transport o holds.
func (o opened) close() {
	if o.quic != nil {
		o.quic.close("lost the race")
	}
	if o.tls != nil && o.tls.conn != nil {
		_ = o.tls.conn.Close()
	}
}

// setPath records the path of the next session and why.
func (c *Client) setPath(path, why string) {
	c.mu.Lock()
	c.path, c.pathWhy = path, why
	c.mu.Unlock()
}

// dialQUIC tries each configured gateway in order over QUIC.
func (c *Client) dialQUIC(ctx context.Context, m *material) (*quicPath, error) {
	var errs []error
	for _, addr := range c.dialOrder() {
		c.noteTrying(addr)
		q, err := c.dialQUICTo(ctx, addr, m)
		if err == nil {
			return q, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// dialQUICTo completes the QUIC handshake with one gateway and waits for
// its HTTP/3 settings. The socket carries the client's fwmark, as the TLS
// stream's does (route.go, the kill switch).
func (c *Client) dialQUICTo(ctx context.Context, addr string, m *material) (*quicPath, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	mark := tunnel.MarkControl(uint32(c.net.table))
	ip, err := netip.ParseAddr(host)
	if err != nil {
		resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			d := net.Dialer{Timeout: 5 * time.Second, Control: mark}
			return d.DialContext(ctx, network, address)
		}}
		ips, lerr := resolver.LookupNetIP(ctx, "ip", host)
		if lerr != nil || len(ips) == 0 {
			return nil, fmt.Errorf("resolve %s: %w", host, lerr)
		}
		ip = ips[0].Unmap()
	}
	port, err := net.LookupPort("udp", portStr)
	if err != nil {
		return nil, err
	}
	lc := net.ListenConfig{Control: mark}
	network := "udp4"
	if ip.Is6() {
		network = "udp6"
	}
	udp, err := lc.ListenPacket(ctx, network, ":0")
	if err != nil {
		return nil, fmt.Errorf("UDP socket: %w", err)
	}
	tr := &quic.Transport{Conn: udp}
	conf := c.tlsConfig(m)
	conf.NextProtos = []string{masque.ALPN}
	qconf := &quic.Config{
		EnableDatagrams:      true,
		InitialPacketSize:    quicPacketSize,
		KeepAlivePeriod:      10 * time.Second, // the gateway's default keepalive; its timeout bounds the idle timeout
		MaxIdleTimeout:       35 * time.Second,
		HandshakeIdleTimeout: 5 * time.Second,
	}
	qc, err := tr.Dial(ctx, net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))), conf, qconf)
	if err != nil {
		_ = tr.Close()
		_ = udp.Close()
		return nil, fmt.Errorf("QUIC handshake: %w", err)
	}
	q := &quicPath{addr: addr, m: m, udp: udp, tr: tr, qc: qc}
	q.h3 = (&http3.Transport{EnableDatagrams: true}).NewClientConn(qc)
	select {
	case <-q.h3.ReceivedSettings():
	case <-qc.Context().Done():
		q.close("")
		return nil, fmt.Errorf("gateway closed the QUIC connection: %w", context.Cause(qc.Context()))
	case <-ctx.Done():
		q.close("")
		return nil, ctx.Err()
	}
	if st := q.h3.Settings(); !st.EnableDatagrams || !st.EnableExtendedConnect {
		q.close("")
		return nil, errors.New("gateway does not offer HTTP/3 datagrams and extended CONNECT")
	}
	if n := masque.MaxPacket(qc); n < MinDatagramMTU {
		q.close("")
		return nil, fmt.Errorf("a datagram carries IP packets of at most %d bytes on this path (%d needed)", n, MinDatagramMTU)
	}
	return q, nil
}

// connectIP sends the CONNECT-IP request with the hello and reads the
// capsules up to sallyport's config.
func (c *Client) connectIP(ctx context.Context, q *quicPath, hello tunnel.Hello) (*http3.RequestStream, *masque.Link, tunnel.Config, error) {
	rs, err := q.h3.OpenRequestStream(ctx)
	if err != nil {
		return nil, nil, tunnel.Config{}, fmt.Errorf("open request stream: %w", err)
	}
	hb, err := json.Marshal(hello)
	if err != nil {
		return nil, nil, tunnel.Config{}, err
	}
	_, port, _ := net.SplitHostPort(q.addr)
	authority := net.JoinHostPort(q.m.srvName, port)
	req := &http.Request{
		Method: http.MethodConnect, Proto: masque.Protocol, Host: authority,
		URL:    &url.URL{Scheme: "https", Host: authority, Path: masque.Path},
		Header: http.Header{http3.CapsuleProtocolHeader: {"?1"}, masque.HelloHeader: {string(hb)}},
	}
	req = req.WithContext(ctx)
	_ = rs.SetDeadline(time.Now().Add(15 * time.Second))
	if err := rs.SendRequestHeader(req); err != nil {
		return nil, nil, tunnel.Config{}, fmt.Errorf("send CONNECT-IP request: %w", err)
	}
	resp, err := rs.ReadResponse()
	if err != nil {
		return nil, nil, tunnel.Config{}, fmt.Errorf("read CONNECT-IP response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		if reason := resp.Header.Get(masque.ReasonHeader); reason != "" {
			return nil, nil, tunnel.Config{}, &closeError{reason: reason}
		}
		return nil, nil, tunnel.Config{}, fmt.Errorf("gateway answered the CONNECT-IP request with %s", resp.Status)
	}
	link := masque.NewLink(rs)
	link.Direct(q.qc, rs.StreamID())
	for {
		typ, v, err := link.NextCapsule()
		if err != nil {
			return nil, nil, tunnel.Config{}, fmt.Errorf("read config: %w", err)
		}
		if typ != masque.CapsuleSallyport {
			continue // ADDRESS_ASSIGN, ROUTE_ADVERTISEMENT: the config says the same and more
		}
		ft, payload, err := masque.ParseFrame(v)
		if err != nil {
			return nil, nil, tunnel.Config{}, err
		}
		switch ft {
		case tunnel.FrameClose:
			return nil, nil, tunnel.Config{}, closeFrame(payload)
		case tunnel.FrameConfig:
			pc, err := tunnel.DecodeConfig(payload)
			if err != nil {
				return nil, nil, tunnel.Config{}, fmt.Errorf("bad config from gateway: %w", err)
			}
			_ = rs.SetDeadline(time.Time{})
			return rs, link, pc, nil
		default:
			return nil, nil, tunnel.Config{}, fmt.Errorf("first sallyport frame is type %#x, want config", ft)
		}
	}
}

// sessionQUIC runs one session on the datagram path until it ends.
func (c *Client) sessionQUIC(ctx context.Context, q *quicPath, m *material, up func()) error {
	defer q.close("")
	addr := q.addr
	hello := tunnel.Hello{Version: tunnel.ProtocolVersion, Caps: []string{tunnel.CapPush}, Software: "sallyport"}
	km, whyNot := keyMakerFor(c.cfg, m)
	if km != nil {
		hello.Caps = append(hello.Caps, tunnel.CapRenew)
	}
	_, link, pc, err := c.connectIP(ctx, q, hello)
	if err != nil {
		return fmt.Errorf("%s: %w", addr, err)
	}
	cn := &conn{w: link, link: link, qc: q.qc}
	cn.hangup = func() { q.close("") }
	var tooBigAt atomic.Int64
	link.TooBig = func(pkt []byte, mtu int) {
		now := time.Now().UnixNano()
		if l := tooBigAt.Load(); now-l >= int64(10*time.Millisecond) && tooBigAt.CompareAndSwap(l, now) {
			c.tooBig(pkt, mtu, pc)
		}
	}
	link.SetTimeout(pc.Timeout)
	// Shutdown tells the gateway and closes the QUIC connection, as on
	// the TLS stream.
	stopClose := context.AfterFunc(ctx, func() { cn.hangUp(tunnel.ReasonClientShutdown) })
	defer stopClose()
	c.mtuCap.Store(int32(masque.MaxPacket(q.qc)))
	renew, err := c.live(cn, addr, pc, hello.Caps, m, km, whyNot, up)
	if err != nil {
		return err
	}
	defer c.cur.CompareAndSwap(cn, nil)

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { c.routineQUICTimers(sctx, cn) })
	if renew {
		wg.Go(func() { c.routineRenew(sctx, cn, pc.RenewAt, km) })
	}
	wg.Go(func() {
		cn.fail(c.readCapsules(cn))
		cancel()
	})
	err = c.readDatagrams(cn)
	cancel()
	q.close("")
	wg.Wait()
	if e := cn.failed(); e != nil {
		err = e
	}
	return fmt.Errorf("%s: %w", addr, err)
}

// fail records the first reason the session ended and closes the QUIC
// connection, which ends the datagram reader.
func (cn *conn) fail(err error) {
	if err != nil {
		cn.closeErr.CompareAndSwap(nil, &err)
	}
	cn.hangup()
}

// failed is the first reason recorded by fail.
func (cn *conn) failed() error {
	if p := cn.closeErr.Load(); p != nil {
		return *p
	}
	return nil
}

// readCapsules handles the gateway's control frames on the datagram
// path (push, close) until the stream ends.
func (c *Client) readCapsules(cn *conn) error {
	for {
		typ, v, err := cn.link.NextCapsule()
		if err != nil {
			return quicClosed(err)
		}
		if typ != masque.CapsuleSallyport {
			continue // new routes come in the push as well
		}
		ft, payload, err := masque.ParseFrame(v)
		if err != nil {
			return err
		}
		switch ft {
		case tunnel.FrameKeepalive:
			// Answered at once, as on the TLS stream (client.go readStream):
			// how the gateway tells this live session from a dead one.
			if _, err := cn.link.TryWriteControl(tunnel.FrameKeepalive, nil); err != nil {
				return err
			}
		case tunnel.FrameClose:
			return closeFrame(payload)
		case tunnel.FramePush:
			if err := c.onPush(payload); err != nil {
				return err
			}
		case tunnel.FrameRenewed:
			if err := c.onRenewed(cn, payload); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unexpected control frame %#x from gateway", ft)
		}
	}
}

// quicClosed is why the gateway ended a datagram-path session, from the
// error the connection ended with. The gateway sends a Close capsule and
// then closes the QUIC connection with the same reason (server/masque.go
// hangup); the connection's close can overtake the capsule, so a reason
// in the gateway's CONNECTION_CLOSE ("revoked", "drain", "kicked") is the
// Close frame's: classified as a refusal, not as a lost connection.
func quicClosed(err error) error {
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.Remote && ae.ErrorCode == quic.ApplicationErrorCode(http3.ErrCodeNoError) && ae.ErrorMessage != "" {
		return &closeError{reason: ae.ErrorMessage}
	}
	return fmt.Errorf("gateway closed the connection: %w", err)
}

// readDatagrams relays gateway -> TUN on the datagram path until it ends:
// each batch of what arrived goes through tunnel.Inbound, the receive half
// of the TLS stream too (header validation, order, one TUN write; no AQM
// and no verdict).
func (c *Client) readDatagrams(cn *conn) error {
	b := recvBatch(c.dev.BatchSize())
	defer recvBatches.Put(b)
	in := tunnel.Inbound{Dev: c.dev, MTU: c.pushedMTU(), Drops: &c.drops, Packets: &c.packetsIn, Bytes: &c.bytesIn}
	for {
		err := cn.link.Wait()
		if err == nil {
			var res tunnel.InboundResult
			res, err = in.ReadDatagrams(cn.link, b)
			c.received(res)
		}
		if err != nil {
			return fmt.Errorf("datagram path closed: %w", err)
		}
	}
}

// routineQUICTimers follows the datagram size: when path-MTU discovery
// lets a datagram carry more, the TUN's MTU grows with it (never past the
// pushed MTU). QUIC itself sends keepalives and times the path out.
func (c *Client) routineQUICTimers(ctx context.Context, cn *conn) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			n := int32(masque.MaxPacket(cn.qc))
			if n < MinDatagramMTU || n == c.mtuCap.Load() {
				continue
			}
			c.mtuCap.Store(n)
			c.mu.Lock()
			mtu := c.tunMTU(c.pushed.MTU)
			c.mu.Unlock()
			if err := c.net.setMTU(mtu); err != nil {
				c.log.Warn("set the tunnel MTU to the datagram size failed", "mtu", mtu, "err", err)
				continue
			}
			c.log.Info("tunnel MTU follows the datagram path", "mtu", mtu)
		}
	}
}

// tunMTU is the TUN's MTU for a pushed MTU: capped by what a datagram
// carries on the datagram path (mtuCap, 0 on the TLS stream).
func (c *Client) tunMTU(pushed int) int {
	if cp := int(c.mtuCap.Load()); cp > 0 && cp < pushed {
		return cp
	}
	return pushed
}

// tooBig answers a packet of this laptop that is larger than the datagram
// path takes (mtu) with ICMP Packet Too Big / Fragmentation Needed from the
// gateway's tunnel address, written to the TUN: the sender's path-MTU
// discovery then sends smaller ones.
func (c *Client) tooBig(pkt []byte, mtu int, pc tunnel.Config) {
	from := pc.Gateway
	if len(pkt) > 0 && pkt[0]>>4 == 6 {
		from = pc.Gateway6
		if !from.IsValid() && pc.Address.Addr().Is6() {
			from = pc.Gateway
		}
	}
	b, ok := packet.AppendTooBig(make([]byte, tunnel.Headroom, tunnel.Headroom+1280), pkt, mtu, from)
	if !ok {
		return
	}
	if _, err := c.dev.Write([][]byte{b}, tunnel.Headroom); err != nil {
		c.log.Debug("write ICMP too-big to the TUN failed", "err", err)
	}
}

// routineRetryUDP, while a session runs on the TLS stream after a
// fallback, tries the QUIC handshake every transport.retry_udp; when one
// completes it keeps that connection for the next session and ends this
// one (errUpgrade), so the laptop moves to the datagram path.
func (c *Client) routineRetryUDP(ctx context.Context, cn *conn) {
	t := time.NewTicker(c.cfg.Transport.RetryUDP)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		q, err := c.dialQUIC(dctx, c.material())
		cancel()
		if err != nil {
			c.log.Debug("the datagram path (UDP) still fails", "err", err)
			continue
		}
		if old := c.upgrade.Swap(q); old != nil {
			old.close(string(tunnel.ReasonReplaced)) // a newer connection of this device replaces it
		}
		c.log.Info("the datagram path (UDP) works again; moving the session to it")
		cn.fail(errUpgrade)
		return
	}
}

// v6In reports whether pc gives an IPv6 tunnel address.
func v6In(pc tunnel.Config) bool {
	return slices.ContainsFunc(pc.Addresses(), func(p netip.Prefix) bool { return p.Addr().Is6() })
}
