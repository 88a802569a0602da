// Package policyroute is the laptop's policy routing over netlink: routes in
// a table of their own (through the TUN, or unreachable behind it), the
// `ip rule`s that send unmarked packets there, the prefixes the laptop is
// directly connected to, and address removal. Only the client uses it
// (client/route.go plans what it installs); it moved out of tunnel, which
// both sides share. Linux only: policyroute_other.go refuses.
package policyroute

import (
	"fmt"
	"net/netip"
)

// TableRoute is one route in a policy routing table: Dst through link Dev,
// or, when Unreachable, a route that refuses Dst (no device). Metric is the
// route's priority (lower wins; 0 is the kernel's default, which for IPv6
// is 1024); two routes to one Dst with different metrics live side by
// side, so a route through a link can have an unreachable one behind it
// that takes over when the link goes away.
type TableRoute struct {
	Dst         netip.Prefix
	Dev         string
	Table       int
	Unreachable bool
	Metric      int
}

// String is the route as `ip route` would print it.
func (r TableRoute) String() string {
	s := fmt.Sprintf("%s dev %s table %d", r.Dst, r.Dev, r.Table)
	if r.Unreachable {
		s = fmt.Sprintf("unreachable %s table %d", r.Dst, r.Table)
	}
	if r.Metric != 0 {
		s += fmt.Sprintf(" metric %d", r.Metric)
	}
	return s
}

// Rule is one policy routing rule (`ip rule`): traffic of family V6 (else
// IPv4) at Priority looks up Table. With NotMark set it applies only to
// packets whose fwmark is not NotMark (the client's own, marked socket to
// the gateway skips it); SuppressPrefixlen >= 0 ignores a route found in
// Table whose prefix is that long or shorter (0: the default route), and -1
// means none.
type Rule struct {
	V6                bool
	Priority          int
	Table             int
	NotMark           uint32
	SuppressPrefixlen int
}

// String is the rule as `ip rule` would print it.
func (r Rule) String() string {
	s := fmt.Sprintf("%d:", r.Priority)
	if r.V6 {
		s = "v6 " + s
	} else {
		s = "v4 " + s
	}
	if r.NotMark != 0 {
		s += fmt.Sprintf(" not fwmark %#x", r.NotMark)
	} else {
		s += " from all"
	}
	s += fmt.Sprintf(" lookup %d", r.Table)
	if r.Table == TableMain {
		s = s[:len(s)-len(fmt.Sprint(TableMain))] + "main"
	}
	if r.SuppressPrefixlen >= 0 {
		s += fmt.Sprintf(" suppress_prefixlength %d", r.SuppressPrefixlen)
	}
	return s
}

// TableMain is the kernel's main routing table (RT_TABLE_MAIN).
const TableMain = 254
