package server

// The address -> session table the data plane reads per packet.
//
// routineReadTUN looks up the session of every packet's destination, and the conntrack check between devices looks up
// the other device's session, so the lookup must be cheap and take no lock
// shared with connecting devices. Registering and unregistering must not
// cost more with more sessions either (the old copy-on-write map copied
// every entry per connect and disconnect: O(N) per device, O(N^2) for a
// reconnect storm).
//
// addrTable is a radix table over 32 bits of the address (an IPv4 address
// whole, the low 32 bits of an IPv6 one; one table per family), three
// levels (12 + 12 + 8 bits) of atomic pointers: a lookup is three atomic
// loads and a compare, an update one atomic store (plus a page allocation
// the first time an address range is used), so both are O(1) and readers
// never lock. Two IPv6 addresses that share their low 32 bits (never in
// one pool of /96 or longer) are told apart by an overflow map behind a
// mutex, consulted only while it is not empty. Pages are never freed: 8
// bytes per address ever handed out, plus a 32 KiB middle page per 2^20
// addresses. Writers are serialized by the caller (Server.sessMu).

import (
	"net/netip"
	"sync"
	"sync/atomic"
)

type addrLeaf [256]atomic.Pointer[session]
type addrMid [4096]atomic.Pointer[addrLeaf]
type addrRadix [4096]atomic.Pointer[addrMid]

type addrTable struct {
	v4, v6    addrRadix
	overflowN atomic.Int32
	mu        sync.Mutex
	overflow  map[netip.Addr]*session
}

// slot returns the radix slot of a, creating its pages when create is set
// (else nil when they do not exist).
func (t *addrTable) slot(a netip.Addr, create bool) *atomic.Pointer[session] {
	r := &t.v4
	var v uint32
	if a.Is4() {
		b := a.As4()
		v = uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	} else {
		b := a.As16()
		r, v = &t.v6, uint32(b[12])<<24|uint32(b[13])<<16|uint32(b[14])<<8|uint32(b[15])
	}
	mid := r[v>>20].Load()
	if mid == nil {
		if !create {
			return nil
		}
		mid = new(addrMid)
		r[v>>20].Store(mid)
	}
	leaf := mid[v>>8&0xfff].Load()
	if leaf == nil {
		if !create {
			return nil
		}
		leaf = new(addrLeaf)
		mid[v>>8&0xfff].Store(leaf)
	}
	return &leaf[v&0xff]
}

// lookup returns the session holding a, or nil.
func (t *addrTable) lookup(a netip.Addr) *session {
	if !a.IsValid() {
		return nil
	}
	if p := t.slot(a, false); p != nil {
		if ss := p.Load(); ss != nil && ss.holds(a) {
			return ss
		}
	}
	if t.overflowN.Load() == 0 {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.overflow[a]
}

// store makes ss the session holding a (one of ss's addresses), or with a nil
// ss forgets a. Callers serialize stores.
func (t *addrTable) store(a netip.Addr, ss *session) {
	if !a.IsValid() {
		return
	}
	p := t.slot(a, ss != nil)
	if p == nil {
		return
	}
	cur := p.Load()
	switch {
	case cur == nil || cur.holds(a):
		p.Store(ss) // and drop a stale overflow entry of a, if any
	case ss == nil:
		// cur holds another address in this slot; a can only be in overflow.
	default:
		t.mu.Lock()
		if t.overflow == nil {
			t.overflow = map[netip.Addr]*session{}
		}
		t.overflow[a] = ss
		t.overflowN.Store(int32(len(t.overflow)))
		t.mu.Unlock()
		return
	}
	if t.overflowN.Load() > 0 {
		t.mu.Lock()
		delete(t.overflow, a)
		t.overflowN.Store(int32(len(t.overflow)))
		t.mu.Unlock()
	}
}
