package server

// Pre-authentication limits: what a stranger without a certificate can
// hold of the gateway, in the shape web servers use (nginx's and HAProxy's
// client-hello timeouts, Go's ReadHeaderTimeout).
//
// Every TCP connection takes one of tls.max_handshakes slots from accept
// until its session is live (or it fails). Until it has sent its whole TLS
// ClientHello it is a stranger that has proved nothing and cost the
// gateway nothing but a socket, so:
//
//   - it must send its first byte within tls.first_byte_timeout and the
//     whole ClientHello within tls.hello_timeout of the accept (a silent
//     connection, or one dripping a byte a second, is closed and counted as
//     first-byte-timeout or hello-timeout); after the ClientHello the whole
//     handshake has tls.handshake_timeout;
//   - one source (an IPv4 address, an IPv6 /64) holds at most
//     tls.max_handshakes_per_source slots;
//   - when every slot (or every slot of the newcomer's source) is busy, the
//     oldest connection that has not finished its ClientHello is closed to
//     make room (counted as evicted) instead of the newcomer being
//     refused: of the newcomer's own source when that source is full, else
//     of the source holding the most slots (so an address flooding the
//     gateway loses its own connections first). A real laptop sends its
//     ClientHello within a round trip of connecting, so a waiting stranger
//     is older than it; only when every busy slot is past its ClientHello
//     is the newcomer closed (handshakes-full, per-source-limit).
//
// shakeTable is that bookkeeping, free of sockets and clocks so that its
// rules are unit-tested deterministically; shakeConn applies the deadlines
// to one connection (server.go admitted).

import (
	"container/list"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// Defaults of the pre-authentication limits (config.go applies them).
const (
	DefaultFirstByteTimeout = 3 * time.Second
	DefaultHelloTimeout     = 5 * time.Second
	// DefaultMaxHandshakesPerSource is the default share of one address
	// (IPv4) or /64 (IPv6): an office behind one NAT address reconnecting
	// after a restart has a few dozen handshakes in flight at once.
	DefaultMaxHandshakesPerSource = 32
)

// sourceOf groups a remote address: the address for IPv4 (IPv4-mapped
// IPv6 included), its /64 for IPv6 (what one subscriber is given). The
// zero prefix for an address that does not parse.
func sourceOf(addr net.Addr) netip.Prefix {
	var a netip.Addr
	switch t := addr.(type) {
	case *net.TCPAddr:
		a, _ = netip.AddrFromSlice(t.IP)
	default:
		if ap, err := netip.ParseAddrPort(addr.String()); err == nil {
			a = ap.Addr()
		}
	}
	a = a.Unmap().WithZone("")
	if !a.IsValid() {
		return netip.Prefix{}
	}
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// shakeSlot is one connection holding a handshake slot.
type shakeSlot struct {
	src     netip.Prefix
	conn    io.Closer     // closed when the slot is taken from it
	pending *list.Element // in shakeTable.pending until its ClientHello is read
	gone    bool          // no longer in the table (released or evicted)
	evicted bool          // closed to make room for a newcomer
}

// shakeTable admits connections into the handshake slots. Safe for
// concurrent use.
type shakeTable struct {
	mu       sync.Mutex
	inFlight int
	bySource map[netip.Prefix]int
	pending  list.List // *shakeSlot before their ClientHello, oldest first
}

// admit takes a slot for a connection from src under the limits (0: no
// limit). When the source or every slot is full it evicts the oldest
// connection still waiting for its ClientHello (of that source, or of
// any) and returns it as victim: the caller closes it. When nothing can be
// evicted the newcomer gets no slot (nil) and the reason.
func (t *shakeTable) admit(src netip.Prefix, c io.Closer, max, perSource int) (slot, victim *shakeSlot, refused tunnel.Reason) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.bySource == nil {
		t.bySource = map[netip.Prefix]int{}
	}
	switch {
	case perSource > 0 && t.bySource[src] >= perSource:
		if victim = t.oldestPending(src); victim == nil {
			return nil, nil, tunnel.ReasonPerSource
		}
	case max > 0 && t.inFlight >= max:
		if victim = t.oldestOfHeaviest(); victim == nil {
			return nil, nil, tunnel.ReasonOverload
		}
	}
	if victim != nil {
		victim.evicted = true
		t.releaseLocked(victim)
	}
	slot = &shakeSlot{src: src, conn: c}
	slot.pending = t.pending.PushBack(slot)
	t.inFlight++
	t.bySource[src]++
	return slot, victim, ""
}

// oldestPending is the oldest slot of source src waiting for its
// ClientHello, or nil.
func (t *shakeTable) oldestPending(src netip.Prefix) *shakeSlot {
	for e := t.pending.Front(); e != nil; e = e.Next() {
		if s := e.Value.(*shakeSlot); s.src == src {
			return s
		}
	}
	return nil
}

// oldestOfHeaviest is the oldest slot waiting for its ClientHello among
// those of the sources holding the most slots, or nil. One pass over the
// waiting slots (at most tls.max_handshakes), oldest first.
func (t *shakeTable) oldestOfHeaviest() *shakeSlot {
	var best *shakeSlot
	for e := t.pending.Front(); e != nil; e = e.Next() {
		if s := e.Value.(*shakeSlot); best == nil || t.bySource[s.src] > t.bySource[best.src] {
			best = s
		}
	}
	return best
}

// helloDone marks the slot's ClientHello as read: it can no longer be
// evicted. Reports false when the slot was evicted already.
func (t *shakeTable) helloDone(s *shakeSlot) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.pending != nil {
		t.pending.Remove(s.pending)
		s.pending = nil
	}
	return !s.gone
}

// release frees the slot (idempotent: an evicted slot is released
// already).
func (t *shakeTable) release(s *shakeSlot) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.releaseLocked(s)
}

func (t *shakeTable) releaseLocked(s *shakeSlot) {
	if s.gone {
		return
	}
	s.gone = true
	if s.pending != nil {
		t.pending.Remove(s.pending)
		s.pending = nil
	}
	t.inFlight--
	if t.bySource[s.src]--; t.bySource[s.src] <= 0 {
		delete(t.bySource, s.src)
	}
}

// wasEvicted reports whether the slot was taken from its connection.
func (t *shakeTable) wasEvicted(s *shakeSlot) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return s.evicted
}

// counts is the slots in flight, those still waiting for their
// ClientHello, and the sources holding slots.
func (t *shakeTable) counts() (inFlight, waitingHello, sources int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inFlight, t.pending.Len(), len(t.bySource)
}

// Stages of a connection before its session, for its deadline and for the
// cause a timeout is counted under.
type shakeStage uint8

const (
	stageAccepted  shakeStage = iota // nothing received yet
	stageFirstByte                   // bytes of the ClientHello arriving
	stageHello                       // ClientHello read: the rest of the handshake
)

// preauthLimits are the deadlines of the stages, from the accept.
type preauthLimits struct {
	firstByte, hello, handshake time.Duration
}

func limitsOf(c *TLSConfig) preauthLimits {
	return preauthLimits{c.FirstByteTimeout, c.HelloTimeout, c.HandshakeTimeout}
}

// deadline is when a connection accepted at t0 is closed in stage st.
func (l preauthLimits) deadline(t0 time.Time, st shakeStage) time.Time {
	d := l.handshake
	switch st {
	case stageAccepted:
		d = min(l.firstByte, l.handshake)
	case stageFirstByte:
		d = min(l.hello, l.handshake)
	}
	return t0.Add(d)
}

// timeoutReason is the cause a connection that timed out in stage st is
// counted under.
func timeoutReason(st shakeStage) tunnel.Reason {
	switch st {
	case stageAccepted:
		return tunnel.ReasonFirstByteTimeout
	case stageFirstByte:
		return tunnel.ReasonHelloTimeout
	}
	return tunnel.ReasonHandshake
}

// shakeConn is the connection under a TLS handshake. It moves the
// connection's deadline through the stages (first byte, ClientHello read)
// and holds the trust decision VerifyConnection leaves for admitted to act
// on. Only the handshake goroutine uses it.
type shakeConn struct {
	net.Conn
	t0     time.Time
	limits preauthLimits
	stage  shakeStage
	slot   *shakeSlot  // nil when not admitted through the table
	table  *shakeTable // of slot

	t   *trust
	v   verdict
	err error
}

// newShakeConn sets the first deadline of a connection accepted at t0.
func newShakeConn(c net.Conn, t0 time.Time, l preauthLimits, table *shakeTable, slot *shakeSlot) *shakeConn {
	sc := &shakeConn{Conn: c, t0: t0, limits: l, table: table, slot: slot}
	_ = c.SetDeadline(l.deadline(t0, stageAccepted))
	return sc
}

// Read moves to stageFirstByte with the first byte received.
func (c *shakeConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && c.stage == stageAccepted {
		c.setStage(stageFirstByte)
	}
	return n, err
}

// helloRead is called once the whole ClientHello is read (the TLS
// config's GetConfigForClient): the slot can no longer be evicted and the
// rest of the handshake gets tls.handshake_timeout from the accept.
func (c *shakeConn) helloRead() {
	if c.stage == stageHello {
		return
	}
	if c.slot != nil {
		c.table.helloDone(c.slot)
	}
	c.setStage(stageHello)
}

func (c *shakeConn) setStage(st shakeStage) {
	c.stage = st
	_ = c.Conn.SetDeadline(c.limits.deadline(c.t0, st))
}
