package server

// The gateway's own addresses for the packet filter (policy/own.go): a
// device reaches one only through an allow rule naming it alone. The set
// is the host's interface addresses (the LAN, public and tunnel addresses,
// whatever the admin adds later), the tunnel pools' gateway addresses and
// the listeners' addresses, and with each subnet those addresses that
// Linux also delivers to the host's own sockets: an IPv4 subnet's
// broadcast (and network) address, an IPv6 subnet's subnet-router anycast
// address (on a router, which the gateway is). routineWatch refreshes it
// every ownRefresh so an address added at run time is closed within a
// second.

import (
	"net"
	"net/netip"
	"slices"
	"time"
)

// ownRefresh is how often the host's addresses are read again.
const ownRefresh = time.Second

// configOwnAddrs are the gateway addresses cfg names: the tunnel pools'
// gateway addresses (with their subnets' broadcast and anycast addresses)
// and the VPN and metrics listeners' (when not a wildcard).
func configOwnAddrs(cfg *Config) []netip.Addr {
	var out []netip.Addr
	for _, g := range newPools(cfg).Gateways() {
		out = append(out, subnetOwn(g)...)
	}
	for _, hp := range []string{cfg.Listen, cfg.Metrics.Listen} {
		if host, _, err := net.SplitHostPort(hp); err == nil {
			if a, err := netip.ParseAddr(host); err == nil && !a.IsUnspecified() {
				out = append(out, a.Unmap())
			}
		}
	}
	return out
}

// hostAddrs are the addresses of every interface of this host, with
// their subnets' (subnetOwn); nil when they cannot be read.
func hostAddrs() []netip.Addr {
	ifas, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ifa := range ifas {
		if pfx, err := netip.ParsePrefix(ifa.String()); err == nil {
			out = append(out, subnetOwn(netip.PrefixFrom(pfx.Addr().WithZone("").Unmap(), pfx.Bits()))...)
		}
	}
	return out
}

// subnetOwn is an interface address p.Addr() and what else of its subnet
// p reaches the host itself: for IPv4 below /31 the broadcast and network
// addresses, for IPv6 below /127 the subnet-router anycast address (the
// network address; RFC 4291 2.6.1).
func subnetOwn(p netip.Prefix) []netip.Addr {
	out := []netip.Addr{p.Addr()}
	if !p.IsValid() {
		return out
	}
	base := p.Masked().Addr()
	switch {
	case p.Addr().Is4() && p.Bits() < 31:
		b := base.As4()
		for i := p.Bits(); i < 32; i++ {
			b[i/8] |= 0x80 >> (i % 8)
		}
		out = append(out, base, netip.AddrFrom4(b))
	case p.Addr().Is6() && p.Bits() < 127:
		out = append(out, base)
	}
	return out
}

// ownAddrs is the set the filter treats apart now.
func ownAddrs(cfg *Config) []netip.Addr {
	return append(configOwnAddrs(cfg), hostAddrs()...)
}

// refreshOwn reads the host's addresses again and replaces the filter's
// set when it changed.
func (s *Server) refreshOwn() {
	own := s.trustNow().own
	next := ownAddrs(s.config())
	slices.SortFunc(next, netip.Addr.Compare)
	next = slices.Compact(next)
	if !slices.Equal(next, own.Addrs()) {
		own.Set(next)
	}
}
