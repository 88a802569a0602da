package server

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// addrPool hands out tunnel addresses of one family from tunnel.ipv4_pool
// or tunnel.ipv6_pool. The gateway takes the first usable address. A device
// keeps its address across reconnects (and, through leases.go, across
// restarts): leases are reclaimed, oldest first, only when the pool is
// otherwise full, or when idle longer than tunnel.lease_ttl. Static
// [[device]] addresses are reserved for their owners.
type addrPool struct {
	mu      sync.Mutex
	prefix  netip.Prefix
	gateway netip.Addr
	last    netip.Addr // IPv4 broadcast (and, for symmetry, the last IPv6 address): never handed out
	size    int        // addresses scanned for a free one (capped for IPv6)
	now     func() time.Time

	leases map[string]netip.Addr // device key -> address
	seen   map[string]time.Time  // device key -> last acquired or released
	owner  map[netip.Addr]string // address -> device key (leases and statics)
	inUse  map[netip.Addr]bool   // held by a live session
	order  []string              // lease keys, oldest first
	static map[netip.Addr]bool
	next   netip.Addr
}

// maxScan bounds the search for a free address in a huge (IPv6) pool:
// with fewer leases than this, a free address is always found.
const maxScan = 1 << 20

func newAddrPool(p netip.Prefix) *addrPool {
	p = p.Masked()
	gw := p.Addr().Next()
	size := maxScan
	if host := p.Addr().BitLen() - p.Bits(); host < 20 {
		size = 1 << host
	}
	return &addrPool{
		prefix:  p,
		gateway: gw,
		last:    lastAddr(p),
		size:    size,
		now:     time.Now,
		leases:  map[string]netip.Addr{},
		seen:    map[string]time.Time{},
		owner:   map[netip.Addr]string{},
		inUse:   map[netip.Addr]bool{},
		static:  map[netip.Addr]bool{},
		next:    gw.Next(),
	}
}

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Gateway is the gateway's own tunnel address, with the pool's prefix length.
func (p *addrPool) Gateway() netip.Prefix { return netip.PrefixFrom(p.gateway, p.prefix.Bits()) }

// usable reports whether a may be handed to a device at all.
func (p *addrPool) usable(a netip.Addr) bool {
	return p.prefix.Contains(a) && a != p.prefix.Addr() && a != p.gateway && a != p.last
}

// SetStatic replaces the set of reserved static addresses (config reload).
// Addresses of the other family are ignored.
func (p *addrPool) SetStatic(addrs []netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.static = make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		if p.prefix.Contains(a) {
			p.static[a] = true
		}
	}
}

var errPoolExhausted = errors.New("address pool exhausted")

// Acquire marks an address in use for key. want, when valid, is the device's
// static address. It fails when the address is held by a live session of
// another device.
func (p *addrPool) Acquire(key string, want netip.Addr) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if want.IsValid() {
		if o, ok := p.owner[want]; ok && o != key && p.inUse[want] {
			return netip.Addr{}, fmt.Errorf("static address %s is in use by %s", want, o)
		}
		p.take(key, want)
		return want, nil
	}
	if a, ok := p.leases[key]; ok && !p.static[a] && !(p.inUse[a] && p.owner[a] != key) {
		p.take(key, a)
		return a, nil
	}
	// A fresh address: scan once around the pool from the cursor.
	for a, n := p.next, 0; n < p.size; a, n = a.Next(), n+1 {
		if !p.prefix.Contains(a) || a == p.last || !a.IsValid() {
			a = p.gateway.Next()
		}
		if _, taken := p.owner[a]; taken || p.static[a] || a == p.gateway {
			continue
		}
		p.next = a.Next()
		p.take(key, a)
		return a, nil
	}
	// Full: reclaim the oldest lease not held by a live session.
	for _, k := range p.order {
		a := p.leases[k]
		if !p.inUse[a] && !p.static[a] {
			p.forget(k)
			p.take(key, a)
			return a, nil
		}
	}
	return netip.Addr{}, errPoolExhausted
}

func (p *addrPool) take(key string, a netip.Addr) {
	if old, ok := p.leases[key]; ok && old != a {
		p.forget(key)
	}
	if _, ok := p.leases[key]; !ok {
		p.order = append(p.order, key)
	}
	if o, ok := p.owner[a]; ok && o != key {
		p.forget(o)
	}
	p.leases[key] = a
	p.owner[a] = key
	p.inUse[a] = true
	p.seen[key] = p.now()
}

func (p *addrPool) forget(key string) {
	a, ok := p.leases[key]
	if !ok {
		return
	}
	delete(p.leases, key)
	delete(p.seen, key)
	if p.owner[a] == key {
		delete(p.owner, a)
		delete(p.inUse, a)
	}
	for i, k := range p.order {
		if k == key {
			p.order = append(p.order[:i], p.order[i+1:]...)
			break
		}
	}
}

// leaseOf is key's leased address (zero when none).
func (p *addrPool) leaseOf(key string) netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.leases[key]
}

// Release marks key's address free for reuse by key later (the lease stays).
func (p *addrPool) Release(key string, a netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.owner[a] == key {
		delete(p.inUse, a)
		p.seen[key] = p.now()
	}
}

// Expire forgets the leases not held by a live session that were last
// seen before cutoff, and returns how many.
func (p *addrPool) Expire(cutoff time.Time) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var old []string
	for k, a := range p.leases {
		if !p.inUse[a] && p.seen[k].Before(cutoff) {
			old = append(old, k)
		}
	}
	for _, k := range old {
		p.forget(k)
	}
	return len(old)
}

// poolLease is one lease as leases.go stores it.
type poolLease struct {
	addr netip.Addr
	seen time.Time
}

// Snapshot returns every lease; a lease held by a live session is seen now.
func (p *addrPool) Snapshot() map[string]poolLease {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	out := make(map[string]poolLease, len(p.leases))
	for k, a := range p.leases {
		l := poolLease{a, p.seen[k]}
		if p.inUse[a] && p.owner[a] == k {
			l.seen = now
		}
		out[k] = l
	}
	return out
}

// Restore adds saved leases to an empty pool, oldest first. A lease whose
// address is no longer a usable address of the pool, or is taken by an
// earlier lease, is skipped; Restore returns how many were.
func (p *addrPool) Restore(leases map[string]poolLease) (skipped int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	keys := make([]string, 0, len(leases))
	for k := range leases {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := leases[keys[i]], leases[keys[j]]
		if !a.seen.Equal(b.seen) {
			return a.seen.Before(b.seen)
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		l := leases[k]
		if _, dup := p.leases[k]; dup || !p.usable(l.addr) {
			skipped++
			continue
		}
		if _, taken := p.owner[l.addr]; taken {
			skipped++
			continue
		}
		p.leases[k] = l.addr
		p.seen[k] = l.seen
		p.owner[l.addr] = k
		p.order = append(p.order, k)
	}
	return skipped
}

// addrPools are the gateway's pools: IPv4, IPv6 or both (dual stack). A
// device's addresses follow tunnel.Config: addr is the IPv4 address (the
// IPv6 one on a v6-only gateway), addr6 the IPv6 one on a dual-stack
// gateway. Leases are saved to tunnel.lease_file by leases.go.
type addrPools struct {
	v4, v6 *addrPool     // either may be nil, not both
	dirty  chan struct{} // a lease was made, moved or dropped: save soon (leases.go)
	seen   atomic.Bool   // only last-seen times changed since the last save: save within leaseSeenSave
}

func newAddrPools(v4, v6 *addrPool) *addrPools {
	return &addrPools{v4: v4, v6: v6, dirty: make(chan struct{}, 1)}
}

// families lists the pools in use, IPv4 first.
func (p *addrPools) families() []*addrPool {
	var out []*addrPool
	for _, x := range []*addrPool{p.v4, p.v6} {
		if x != nil {
			out = append(out, x)
		}
	}
	return out
}

// primary is the pool of Config.Address: IPv4, or IPv6 on a v6-only gateway.
func (p *addrPools) primary() *addrPool { return p.families()[0] }

// dual reports whether devices get an address of each family.
func (p *addrPools) dual() bool { return p.v4 != nil && p.v6 != nil }

// Gateways are the gateway's own tunnel addresses, IPv4 first.
func (p *addrPools) Gateways() []netip.Prefix {
	var out []netip.Prefix
	for _, x := range p.families() {
		out = append(out, x.Gateway())
	}
	return out
}

// Prefixes are the pools, IPv4 first.
func (p *addrPools) Prefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, x := range p.families() {
		out = append(out, x.prefix)
	}
	return out
}

// SetStatic replaces the reserved static addresses of both families.
func (p *addrPools) SetStatic(addrs []netip.Addr) {
	for _, x := range p.families() {
		x.SetStatic(addrs)
	}
}

// Acquire takes key's addresses (see addrPools), static ones when given.
// Either both families succeed or neither is held. A device that gets the
// addresses it already had changes only its last-seen time, which is saved
// with the next save or within leaseSeenSave; a new or moved lease is
// saved within leaseSaveDelay.
func (p *addrPools) Acquire(key string, want staticAddr) (addr, addr6 netip.Addr, err error) {
	var a4, a6 netip.Addr
	var had4, had6 netip.Addr
	if p.v4 != nil {
		had4 = p.v4.leaseOf(key)
	}
	if p.v6 != nil {
		had6 = p.v6.leaseOf(key)
	}
	if p.v4 != nil {
		if a4, err = p.v4.Acquire(key, want.v4); err != nil {
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("IPv4: %w", err)
		}
	}
	if p.v6 != nil {
		if a6, err = p.v6.Acquire(key, want.v6); err != nil {
			if p.v4 != nil {
				p.v4.Release(key, a4)
			}
			return netip.Addr{}, netip.Addr{}, fmt.Errorf("IPv6: %w", err)
		}
	}
	if a4 != had4 || a6 != had6 {
		p.changed()
	} else {
		p.seen.Store(true)
	}
	if p.v4 == nil {
		return a6, netip.Addr{}, nil
	}
	return a4, a6, nil
}

// Release frees key's addresses for its next session (the leases stay;
// only their last-seen time changes).
func (p *addrPools) Release(key string, addrs ...netip.Addr) {
	for _, a := range addrs {
		for _, x := range p.families() {
			if a.IsValid() && x.prefix.Contains(a) {
				x.Release(key, a)
			}
		}
	}
	p.seen.Store(true)
}

func (p *addrPools) changed() {
	select {
	case p.dirty <- struct{}{}:
	default:
	}
}

// usage is the primary pool's usage (every device holds one address of
// it; on a dual-stack gateway the IPv4 pool is the scarce one).
func (p *addrPools) usage() (size, inUse int) { return p.primary().usage() }
