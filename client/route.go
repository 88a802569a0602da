package client

// Policy routing on the laptop, the way wg-quick does it: the pushed
// prefixes go into sallyport's own routing table ([tunnel] table), the
// client's TLS socket to the gateway carries an fwmark (the same number),
// and `ip rule`s ahead of the main table send everything unmarked there.
// A more specific route that DHCP option 121 or a hostile LAN adds to the
// main table (TunnelVision, CVE-2024-3661) therefore cannot take a pushed
// prefix out of the tunnel, and the gateway stays reachable outside the
// tunnel through the mark, even when a pushed prefix (0.0.0.0/0) covers it.
//
// Per family that has pushed routes, in this order:
//
//	prioSpecific: not fwmark M lookup T suppress_prefixlength 0
//	    pushed prefixes beat anything in main; T's default route is
//	    ignored here so the laptop's own LAN stays reachable
//	prioMain:     lookup main suppress_prefixlength 0     (full tunnel only)
//	    the laptop's connected and other specific routes
//	prioDefault:  not fwmark M lookup T                   (full tunnel only)
//	    everything else into the tunnel
//
// A full tunnel (pushed prefixes that together cover all of IPv4: 0.0.0.0/0,
// or OpenVPN's def1 0.0.0.0/1 + 128.0.0.0/1, ...) on a v4-only tunnel also
// gets `unreachable ::/0` in T, so IPv6 fails at once instead of leaking
// outside the tunnel (the kill switch drops it too); pushed IPv6 prefixes
// without an IPv6 tunnel address are made unreachable the same way.
//
// Every pushed prefix also gets an unreachable route behind its route
// through the TUN (fallbackMetric): the kernel removes the TUN's routes
// with the TUN, so when the client dies (kill -9, a crash) the company's
// prefixes are refused, not sent out the café's network in the clear, kill
// switch or not, until `sallyport down` or the next `up`, which adopts them.
// Only a
// pushed /0 lets the laptop's own LAN through (prioMain): a narrower pushed
// prefix, /1 included, beats main as any pushed prefix does.

import (
	"net/netip"
	"slices"

	"github.com/sallyport/sallyport/client/policyroute"
)

// Rule priorities: ahead of the kernel's main rule (32766).
const (
	prioSpecific = 32700
	prioMain     = 32701
	prioDefault  = 32702
)

// DefaultTable is the routing table (and fwmark) the client uses unless
// [tunnel] table says otherwise: "SP" in ASCII.
const DefaultTable = 0x5350

// fallbackMetric is the metric of the unreachable route planned behind
// every pushed prefix: higher than a route through the TUN (0, which the
// kernel makes 1024 for IPv6), so it only answers once the TUN is gone.
const fallbackMetric = 0x5350

// routePlan is the routes and rules the laptop needs for one pushed config.
type routePlan struct {
	routes []policyroute.TableRoute
	rules  []policyroute.Rule
}

// fullTunnel reports whether routes send all IPv4 or all IPv6 traffic into
// the tunnel: the pushed prefixes of one family together cover its whole
// space, whether as one default route or as several (OpenVPN's def1
// 0.0.0.0/1 + 128.0.0.0/1, four /2s, ...).
func fullTunnel(routes []netip.Prefix) bool {
	return coversAll(routes, false) || coversAll(routes, true)
}

// coversAll reports whether the prefixes of one family (IPv6 when v6, else
// IPv4) in routes together cover every address of that family. Invalid
// prefixes and those of the other family are ignored; overlaps and
// duplicates are fine.
func coversAll(routes []netip.Prefix, v6 bool) bool {
	type span struct{ first, last netip.Addr }
	var spans []span
	for _, p := range routes {
		if !p.IsValid() || p.Addr().Is6() != v6 {
			continue
		}
		p = p.Masked()
		spans = append(spans, span{p.Addr(), lastAddr(p)})
	}
	slices.SortFunc(spans, func(a, b span) int { return a.first.Compare(b.first) })
	next := netip.IPv4Unspecified() // the first address not yet covered
	if v6 {
		next = netip.IPv6Unspecified()
	}
	for _, s := range spans {
		if s.first.Compare(next) > 0 {
			return false // a gap before s
		}
		if s.last.Compare(next) >= 0 {
			if !s.last.Next().IsValid() {
				return true // s reaches the family's last address
			}
			next = s.last.Next()
		}
	}
	return false
}

// lastAddr is the highest address in p (p masked).
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// planRoutes turns the pushed routes into table routes and rules for TUN
// dev and table (also the fwmark); has6 says whether the tunnel has an
// IPv6 address.
func planRoutes(pushed []netip.Prefix, dev string, table int, has6 bool) routePlan {
	var p routePlan
	fam := map[bool]struct{ any, def bool }{}
	// add plans dst through the TUN with its fallback behind it, or only
	// the fallback when unreachable.
	add := func(dst netip.Prefix, unreachable bool) {
		if slices.ContainsFunc(p.routes, func(x policyroute.TableRoute) bool { return x.Dst == dst }) {
			return
		}
		if !unreachable {
			p.routes = append(p.routes, policyroute.TableRoute{Dst: dst, Dev: dev, Table: table})
		}
		p.routes = append(p.routes, policyroute.TableRoute{Dst: dst, Table: table, Unreachable: true, Metric: fallbackMetric})
		v6 := dst.Addr().Is6()
		f := fam[v6]
		f.any = true
		f.def = f.def || dst.Bits() == 0
		fam[v6] = f
	}
	for _, r := range pushed {
		if !r.IsValid() {
			continue
		}
		r = r.Masked()
		add(r, r.Addr().Is6() && !has6)
	}
	if coversAll(pushed, false) && !has6 {
		add(netip.PrefixFrom(netip.IPv6Unspecified(), 0), true)
	}
	for _, v6 := range []bool{false, true} {
		f := fam[v6]
		if !f.any {
			continue
		}
		mark := uint32(table)
		p.rules = append(p.rules, policyroute.Rule{V6: v6, Priority: prioSpecific, Table: table, NotMark: mark, SuppressPrefixlen: 0})
		if f.def {
			p.rules = append(p.rules,
				policyroute.Rule{V6: v6, Priority: prioMain, Table: policyroute.TableMain, SuppressPrefixlen: 0},
				policyroute.Rule{V6: v6, Priority: prioDefault, Table: table, NotMark: mark, SuppressPrefixlen: -1})
		}
	}
	return p
}

// ours reports whether r is one of the rules a client using table installs
// (by priority and table), so a leftover from a crash can be recognised.
func ours(r policyroute.Rule, table int) bool {
	switch r.Priority {
	case prioSpecific, prioDefault:
		return r.Table == table && r.NotMark == uint32(table)
	case prioMain:
		return r.Table == policyroute.TableMain && r.SuppressPrefixlen == 0 && r.NotMark == 0
	}
	return false
}
