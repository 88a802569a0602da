package server

// Pre-authentication limits: what a stranger without a certificate can
// hold of the gateway, in the shape web servers use (nginx's and HAProxy's
// client-hello timeouts, Go's ReadHeaderTimeout).
//
// Every TCP connection takes one of tls.max_handshakes slots from accept
// until its session is live (or it fails). Until its certificate has been
// checked it is a stranger: it has proved nothing. Until it has sent its
// whole TLS ClientHello it has cost the gateway nothing but a socket
// either, so:
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
//     of the network holding the most slots (so an address flooding the
//     gateway loses its own connections first). A real laptop sends its
//     ClientHello within a round trip of connecting, so a waiting stranger
//     is older than it;
//   - when every busy slot is past its ClientHello, a stranger that sent a
//     ClientHello and then went silent (it costs the attacker nothing: the
//     same bytes serve every connection) would hold its slot until
//     tls.handshake_timeout. So the oldest such stranger of the network
//     holding the most slots is closed too (evicted), but only for a
//     newcomer whose own network holds at least two slots fewer: slots are
//     shared out fairly between networks, never taken from one as light as
//     the newcomer's. A laptop's handshake in progress, alone on its
//     network, is never evicted; a few stalled connections from each of
//     many addresses cannot keep a newcomer from a fresh address out;
//     only when every network holds as few slots as the newcomer's is it
//     closed (handshakes-full, per-source-limit). A network, for this
//     sharing, is an IPv4 address or an IPv6 /48 (groupOf): IPv6 /64s are
//     plentiful to anyone holding a /48.
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

// groupOf is the network a source belongs to when slots are shared out
// between networks: the address itself for IPv4, the /48 for IPv6 (a
// site's allocation; one holder can use 65,536 /64s of it).
func groupOf(src netip.Prefix) netip.Prefix {
	if !src.IsValid() || src.Addr().Is4() {
		return src
	}
	p, _ := src.Addr().Prefix(48)
	return p
}

// shakeSlot is one connection holding a handshake slot.
type shakeSlot struct {
	src, group netip.Prefix
	conn       io.Closer     // closed when the slot is taken from it
	elem       *list.Element // in shakeTable.waiting or .unproven while a stranger
	list       *list.List    // which of the two elem is in (nil: proven)
	gone       bool          // no longer in the table (released or evicted)
	evicted    bool          // closed to make room for a newcomer
	pastHello  bool          // evicted after its ClientHello
}

// shakeTable admits connections into the handshake slots. Safe for
// concurrent use.
type shakeTable struct {
	mu       sync.Mutex
	inFlight int
	bySource map[netip.Prefix]int
	byGroup  map[netip.Prefix]int
	waiting  list.List // *shakeSlot before their ClientHello, oldest first
	unproven list.List // *shakeSlot past it, certificate not yet checked, oldest first
}

// admit takes a slot for a connection from src under the limits (0: no
// limit). When the source or every slot is full it evicts the oldest
// connection still waiting for its ClientHello (of that source, or of the
// heaviest network), or, with every slot full, the oldest stranger past
// its ClientHello of a network holding at least two slots more than
// src's, and returns it as victim: the caller closes it. When nothing can
// be evicted the newcomer gets no slot (nil) and the reason.
func (t *shakeTable) admit(src netip.Prefix, c io.Closer, max, perSource int) (slot, victim *shakeSlot, refused tunnel.Reason) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.bySource == nil {
		t.bySource, t.byGroup = map[netip.Prefix]int{}, map[netip.Prefix]int{}
	}
	group := groupOf(src)
	switch {
	case perSource > 0 && t.bySource[src] >= perSource:
		if victim = t.oldestWaiting(src); victim == nil {
			return nil, nil, tunnel.ReasonPerSource
		}
	case max > 0 && t.inFlight >= max:
		if victim = t.oldestOfHeaviest(&t.waiting, 1); victim == nil {
			if victim = t.oldestOfHeaviest(&t.unproven, t.byGroup[group]+2); victim == nil {
				return nil, nil, tunnel.ReasonOverload
			}
			victim.pastHello = true
		}
	}
	if victim != nil {
		victim.evicted = true
		t.releaseLocked(victim)
	}
	slot = &shakeSlot{src: src, group: group, conn: c, list: &t.waiting}
	slot.elem = t.waiting.PushBack(slot)
	t.inFlight++
	t.bySource[src]++
	t.byGroup[group]++
	return slot, victim, ""
}

// take is admit without eviction, for the datagram path's QUIC handshakes
// (quic.go), which the table cannot close: a slot, or none and the reason.
func (t *shakeTable) take(src netip.Prefix, max, perSource int) (*shakeSlot, tunnel.Reason) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.bySource == nil {
		t.bySource, t.byGroup = map[netip.Prefix]int{}, map[netip.Prefix]int{}
	}
	switch {
	case perSource > 0 && t.bySource[src] >= perSource:
		return nil, tunnel.ReasonPerSource
	case max > 0 && t.inFlight >= max:
		return nil, tunnel.ReasonOverload
	}
	slot := &shakeSlot{src: src, group: groupOf(src)}
	t.inFlight++
	t.bySource[src]++
	t.byGroup[slot.group]++
	return slot, ""
}

// oldestWaiting is the oldest slot of source src waiting for its
// ClientHello, or nil.
func (t *shakeTable) oldestWaiting(src netip.Prefix) *shakeSlot {
	for e := t.waiting.Front(); e != nil; e = e.Next() {
		if s := e.Value.(*shakeSlot); s.src == src {
			return s
		}
	}
	return nil
}

// oldestOfHeaviest is the oldest slot of l (waiting or unproven) among
// those of the networks holding the most slots, if that network holds at
// least atLeast slots; else nil. One pass over l (at most
// tls.max_handshakes), oldest first.
func (t *shakeTable) oldestOfHeaviest(l *list.List, atLeast int) *shakeSlot {
	var best *shakeSlot
	for e := l.Front(); e != nil; e = e.Next() {
		if s := e.Value.(*shakeSlot); best == nil || t.byGroup[s.group] > t.byGroup[best.group] {
			best = s
		}
	}
	if best == nil || t.byGroup[best.group] < atLeast {
		return nil
	}
	return best
}

// move puts a live slot on list to (nil: out of both lists).
func (t *shakeTable) move(s *shakeSlot, to *list.List) {
	if s.list != nil {
		s.list.Remove(s.elem)
	}
	s.list, s.elem = to, nil
	if to != nil {
		s.elem = to.PushBack(s)
	}
}

// helloDone marks the slot's ClientHello as read: from now on it is
// evicted only to share the slots out between networks. Reports false
// when the slot was evicted already.
func (t *shakeTable) helloDone(s *shakeSlot) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.gone {
		return false
	}
	if s.list == &t.waiting {
		t.move(s, &t.unproven)
	}
	return true
}

// proven marks the slot's certificate as checked: it is no longer a
// stranger and is never evicted. Reports false when the slot was evicted
// already.
func (t *shakeTable) proven(s *shakeSlot) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.gone {
		return false
	}
	t.move(s, nil)
	return true
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
	t.move(s, nil)
	t.inFlight--
	if t.bySource[s.src]--; t.bySource[s.src] <= 0 {
		delete(t.bySource, s.src)
	}
	if t.byGroup[s.group]--; t.byGroup[s.group] <= 0 {
		delete(t.byGroup, s.group)
	}
}

// wasEvicted reports whether the slot was taken from its connection, and
// whether that was after its ClientHello.
func (t *shakeTable) wasEvicted(s *shakeSlot) (evicted, pastHello bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return s.evicted, s.pastHello
}

// counts is the slots in flight, those still waiting for their
// ClientHello, those past it whose certificate is not checked yet, and
// the sources holding slots.
func (t *shakeTable) counts() (inFlight, waitingHello, unproven, sources int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.inFlight, t.waiting.Len(), t.unproven.Len(), len(t.bySource)
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
// config's GetConfigForClient): the slot is evicted only to share the
// slots out fairly, and the rest of the handshake gets
// tls.handshake_timeout from the accept.
func (c *shakeConn) helloRead() {
	if c.stage == stageHello {
		return
	}
	if c.slot != nil {
		c.table.helloDone(c.slot)
	}
	c.setStage(stageHello)
}

// certChecked is called once the device's certificate has been decided
// on (VerifyConnection): the connection is no stranger any more and keeps
// its slot until its session is live.
func (c *shakeConn) certChecked() {
	if c.slot != nil {
		c.table.proven(c.slot)
	}
}

func (c *shakeConn) setStage(st shakeStage) {
	c.stage = st
	_ = c.Conn.SetDeadline(c.limits.deadline(c.t0, st))
}
