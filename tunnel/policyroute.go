package tunnel

import (
	"fmt"
	"net/netip"
)

// TableRoute is one route in a policy routing table: Dst through link Dev,
// or, when Unreachable, a route that refuses Dst (no device).
type TableRoute struct {
	Dst         netip.Prefix
	Dev         string
	Table       int
	Unreachable bool
}

// String is the route as `ip route` would print it.
func (r TableRoute) String() string {
	if r.Unreachable {
		return fmt.Sprintf("unreachable %s table %d", r.Dst, r.Table)
	}
	return fmt.Sprintf("%s dev %s table %d", r.Dst, r.Dev, r.Table)
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
