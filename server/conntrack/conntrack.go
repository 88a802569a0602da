// Package conntrack is the gateway's flow table: it remembers the flows a
// device opened so that replies can be let back in, and forgets them after
// an idle timeout that depends on the protocol.
//
// A Table is safe for concurrent use (one mutex). Has and Add on an existing
// flow do not allocate; each entry holds only a last-seen timestamp.
package conntrack

import (
	"net/netip"
	"sync"
	"time"

	"github.com/sallyport/sallyport/tunnel/packet"
)

// Flow identifies one direction of a connection. For ICMP echo the ports
// both hold the echo identifier (see packet.Info) and ICMPType tells a
// request from a reply, so Reverse of a reply is its request and Reverse of
// a request is never a request: a LAN host's echo request carrying the
// identifier of a device's live ping does not match that ping.
type Flow struct {
	Proto uint8
	// ICMPType is the ICMP or ICMPv6 message type, 0 for other protocols.
	ICMPType         uint8
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
}

// ICMP echo types (RFC 792, RFC 4443).
const (
	icmpEchoReply     = 0
	icmpEchoRequest   = 8
	icmpv6EchoRequest = 128
	icmpv6EchoReply   = 129
)

// FlowOf returns the flow of a parsed packet.
func FlowOf(p *packet.Info) Flow {
	f := Flow{Proto: p.Proto, Src: p.Src, Dst: p.Dst, SrcPort: p.SrcPort, DstPort: p.DstPort}
	if p.Proto == packet.ProtoICMP || p.Proto == packet.ProtoICMPv6 {
		f.ICMPType = p.ICMPType
	}
	return f
}

// Reverse returns the flow of the other direction: addresses and ports
// swapped, and an ICMP echo request turned into its reply and back. Other
// ICMP types keep their type.
func (f Flow) Reverse() Flow {
	r := Flow{Proto: f.Proto, ICMPType: f.ICMPType, Src: f.Dst, Dst: f.Src, SrcPort: f.DstPort, DstPort: f.SrcPort}
	switch {
	case f.Proto == packet.ProtoICMP && f.ICMPType == icmpEchoRequest:
		r.ICMPType = icmpEchoReply
	case f.Proto == packet.ProtoICMP && f.ICMPType == icmpEchoReply:
		r.ICMPType = icmpEchoRequest
	case f.Proto == packet.ProtoICMPv6 && f.ICMPType == icmpv6EchoRequest:
		r.ICMPType = icmpv6EchoReply
	case f.Proto == packet.ProtoICMPv6 && f.ICMPType == icmpv6EchoReply:
		r.ICMPType = icmpv6EchoRequest
	}
	return r
}

// Default idle timeouts.
const (
	DefaultTCPTimeout   = 5 * time.Minute
	DefaultUDPTimeout   = 60 * time.Second
	DefaultICMPTimeout  = 30 * time.Second
	DefaultOtherTimeout = 60 * time.Second
)

// sweepInterval rate-limits the full-table expiry Add runs when the table
// is full, so a flood of new flows against a full table of live flows
// costs one scan per interval, not one per packet.
const sweepInterval = time.Second

// Table is a bounded flow table with idle timeouts.
//
// The timeout fields may be changed only before the table is first used.
type Table struct {
	TCPTimeout   time.Duration // default 5m
	UDPTimeout   time.Duration // default 60s
	ICMPTimeout  time.Duration // ICMP and ICMPv6; default 30s
	OtherTimeout time.Duration // any other protocol; default 60s

	max       int
	mu        sync.Mutex
	flows     map[Flow]int64 // last seen, unix nanoseconds
	lastSweep int64          // when Add last expired flows of a full table
	swept     bool
}

// New returns an empty table holding at most size flows (size < 1 means 1).
func New(size int) *Table {
	size = max(size, 1)
	return &Table{
		TCPTimeout:   DefaultTCPTimeout,
		UDPTimeout:   DefaultUDPTimeout,
		ICMPTimeout:  DefaultICMPTimeout,
		OtherTimeout: DefaultOtherTimeout,
		max:          size,
		flows:        map[Flow]int64{}, // grows with the flows; an idle session holds almost nothing
	}
}

// Max returns the table's capacity.
func (t *Table) Max() int { return t.max }

func (t *Table) timeout(proto uint8) int64 {
	switch proto {
	case packet.ProtoTCP:
		return int64(t.TCPTimeout)
	case packet.ProtoUDP:
		return int64(t.UDPTimeout)
	case packet.ProtoICMP, packet.ProtoICMPv6:
		return int64(t.ICMPTimeout)
	}
	return int64(t.OtherTimeout)
}

// live reports whether a flow last seen at seen is still within its idle
// timeout at now.
func (t *Table) live(f *Flow, seen, now int64) bool {
	return now-seen <= t.timeout(f.Proto)
}

// Add records f as seen at now. It returns true if f is now in the table
// (new or refreshed) and false if the table is full of live flows even
// after expiring idle ones.
func (t *Table) Add(f Flow, now time.Time) bool {
	n := now.UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	if seen, ok := t.flows[f]; ok {
		t.flows[f] = max(seen, n) // an older now never moves last-seen back
		return true
	}
	if len(t.flows) >= t.max {
		// Swept less than sweepInterval ago: refuse without scanning. A
		// clock that went back makes the difference negative, which as
		// unsigned is huge: then it sweeps.
		if t.swept && uint64(n-t.lastSweep) < uint64(sweepInterval) {
			return false
		}
		t.lastSweep, t.swept = n, true
		t.expireLocked(n)
		if len(t.flows) >= t.max {
			return false
		}
	}
	t.flows[f] = n
	return true
}

// Has reports whether f is in the table and not idle past its timeout at
// now; if so its last-seen time is refreshed. An idle flow found by Has is
// removed.
func (t *Table) Has(f Flow, now time.Time) bool {
	n := now.UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	seen, ok := t.flows[f]
	if !ok {
		return false
	}
	if !t.live(&f, seen, n) {
		delete(t.flows, f)
		return false
	}
	t.flows[f] = max(seen, n)
	return true
}

// Delete removes f; it reports whether f was present.
func (t *Table) Delete(f Flow) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.flows[f]
	delete(t.flows, f)
	return ok
}

// Prune removes every flow for which keep returns false and returns how
// many it removed. keep runs with the table locked: it must not call the
// table's methods.
func (t *Table) Prune(keep func(Flow) bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	removed := 0
	for f := range t.flows {
		if !keep(f) {
			delete(t.flows, f)
			removed++
		}
	}
	return removed
}

// Expire removes the flows idle past their timeout at now and returns how
// many it removed.
func (t *Table) Expire(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.expireLocked(now.UnixNano())
}

func (t *Table) expireLocked(n int64) int {
	removed := 0
	for f, seen := range t.flows {
		if !t.live(&f, seen, n) {
			delete(t.flows, f)
			removed++
		}
	}
	return removed
}

// Len returns the number of flows in the table, idle ones not yet expired
// included.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.flows)
}
