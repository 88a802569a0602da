package policy

// The gateway's own addresses. A policy that allows a network holding the
// gateway (10.0.0.0/8 with the gateway at 10.0.0.2, "any" for a full
// tunnel, the tunnel pool with the gateway's tunnel address) would also
// open the gateway's own ports to devices: its metrics and admin
// listeners, SSH, anything bound to a wildcard address. So the filter
// treats the gateway's own addresses apart: a device reaches one only
// through a rule that names that address alone (a /32 or /128 prefix,
// "10.0.0.2 tcp/9580"), with that rule's protocol and ports. Loopback
// addresses are always the gateway's own, and so is every multicast
// address and the IPv4 limited broadcast 255.255.255.255: Linux delivers
// such a packet from a device to the gateway's own sockets bound to a
// wildcard address (a member of 224.0.0.1 and ff02::1 on every
// interface) and routes it nowhere else. The gateway adds its subnets'
// broadcast and subnet-router anycast addresses to the set (server/own.go)
// for the same reason.

import (
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/sallyport/sallyport/tunnel/packet"
)

// Own is the set of the gateway's own addresses that the grants of a Set
// consult on every packet. The gateway replaces it whole when the host's
// addresses change; safe for concurrent use. The zero value and a nil
// *Own hold no address (loopback, multicast and 255.255.255.255 still
// count as own).
type Own struct {
	set atomic.Pointer[ownSet]
}

// ownSet is one version of the set: a short slice is scanned (the usual
// gateway has a handful of addresses), a long one is a map.
type ownSet struct {
	addrs []netip.Addr // sorted, unmapped, without zones
	m     map[netip.Addr]struct{}
}

// ownLinearMax is the largest set scanned linearly.
const ownLinearMax = 16

// NewOwn returns a set holding addrs.
func NewOwn(addrs ...netip.Addr) *Own {
	o := &Own{}
	o.Set(addrs)
	return o
}

// Set replaces the set with addrs (zones dropped, IPv4-mapped unmapped,
// invalid ones skipped, duplicates merged).
func (o *Own) Set(addrs []netip.Addr) {
	s := &ownSet{}
	for _, a := range addrs {
		if a.IsValid() {
			s.addrs = append(s.addrs, a.WithZone("").Unmap())
		}
	}
	slices.SortFunc(s.addrs, netip.Addr.Compare)
	s.addrs = slices.Compact(s.addrs)
	if len(s.addrs) > ownLinearMax {
		s.m = make(map[netip.Addr]struct{}, len(s.addrs))
		for _, a := range s.addrs {
			s.m[a] = struct{}{}
		}
	}
	o.set.Store(s)
}

// Addrs returns the addresses in the set, sorted.
func (o *Own) Addrs() []netip.Addr {
	if o == nil {
		return nil
	}
	if s := o.set.Load(); s != nil {
		return slices.Clone(s.addrs)
	}
	return nil
}

// limitedBroadcast is 255.255.255.255.
var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// Has reports whether a is one of the gateway's own addresses (an
// IPv4-mapped IPv6 address as its IPv4 address).
func (o *Own) Has(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsMulticast() || a == limitedBroadcast {
		return true
	}
	if o == nil {
		return false
	}
	s := o.set.Load()
	if s == nil {
		return false
	}
	if s.m != nil {
		_, ok := s.m[a]
		return ok
	}
	for _, x := range s.addrs {
		if x == a {
			return true
		}
	}
	return false
}

// hostRules are the rules whose prefix is a single address: the only
// rules that open an address of the gateway's own.
func hostRules(rules []Rule) []Rule {
	var out []Rule
	for _, r := range rules {
		if r.Prefix.IsSingleIP() {
			out = append(out, r)
		}
	}
	return out
}

// UnreachableDNS lists, one sentence each, the DNS resolvers a policy
// pushes that are gateway addresses (own) no allow rule of that policy
// names for DNS (udp/53): devices would be told to use a resolver the
// filter never lets them reach.
func (s *Set) UnreachableDNS() []string {
	if s == nil || s.own == nil {
		return nil
	}
	var out []string
	for i := range s.policies {
		c := &s.policies[i]
		named := buildFilter(hostRules(c.rules))
		for _, d := range c.dns {
			q := packet.Info{Proto: packet.ProtoUDP, Dst: d, DstPort: 53}
			if s.own.Has(d) && !named.allows(&q) {
				out = append(out, fmt.Sprintf("policy %q pushes the DNS server %s, an address of the gateway itself, but none of its allow rules names it: devices cannot reach it (add \"%s udp/53\" and \"%s tcp/53\" to its allow list)",
					c.name, d, d, d))
			}
		}
	}
	return out
}
