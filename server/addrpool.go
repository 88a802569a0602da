package server

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
)

// addrPool hands out tunnel addresses from tunnel.ipv4_pool. The gateway
// takes the first usable address. A device keeps its address across
// reconnects for as long as the server runs (leases are only reclaimed, oldest
// first, when the pool is otherwise full), and static [[device]] addresses are
// reserved for their owners.
type addrPool struct {
	mu      sync.Mutex
	prefix  netip.Prefix
	gateway netip.Addr
	last    netip.Addr // broadcast address, never handed out

	leases map[string]netip.Addr // device key -> address
	owner  map[netip.Addr]string // address -> device key (leases and statics)
	inUse  map[netip.Addr]bool   // held by a live session
	order  []string              // lease keys, oldest first
	static map[netip.Addr]bool
	next   netip.Addr
}

func newAddrPool(p netip.Prefix) *addrPool {
	p = p.Masked()
	gw := p.Addr().Next()
	return &addrPool{
		prefix:  p,
		gateway: gw,
		last:    lastAddr(p),
		leases:  map[string]netip.Addr{},
		owner:   map[netip.Addr]string{},
		inUse:   map[netip.Addr]bool{},
		static:  map[netip.Addr]bool{},
		next:    gw.Next(),
	}
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Gateway is the gateway's own tunnel address, with the pool's prefix length.
func (p *addrPool) Gateway() netip.Prefix { return netip.PrefixFrom(p.gateway, p.prefix.Bits()) }

// SetStatic replaces the set of reserved static addresses (config reload).
func (p *addrPool) SetStatic(addrs []netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.static = make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		p.static[a] = true
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
	for a, n := p.next, 0; n < 1<<(32-p.prefix.Bits()); a, n = a.Next(), n+1 {
		if !p.prefix.Contains(a) || a == p.last {
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
}

func (p *addrPool) forget(key string) {
	a, ok := p.leases[key]
	if !ok {
		return
	}
	delete(p.leases, key)
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

// Release marks key's address free for reuse by key later (the lease stays).
func (p *addrPool) Release(key string, a netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.owner[a] == key {
		delete(p.inUse, a)
	}
}
