package policyroute

// Policy routing for the laptop (client/route.go plans it): the pushed
// prefixes go into their own table and `ip rule`s send every packet that
// does not carry the client's fwmark there, as wg-quick does. All of it
// through netlink, so it needs CAP_NET_ADMIN and no `ip` binary.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

func tableRoute(r TableRoute) (*netlink.Route, error) {
	if !r.Dst.IsValid() {
		return nil, fmt.Errorf("invalid prefix %q", r.Dst)
	}
	nr := &netlink.Route{Dst: ipNet(r.Dst.Masked()), Table: r.Table, Priority: r.Metric}
	if r.Unreachable {
		nr.Type = unix.RTN_UNREACHABLE
		nr.Family = netlink.FAMILY_V4
		if r.Dst.Addr().Is6() {
			nr.Family = netlink.FAMILY_V6
		}
		return nr, nil
	}
	link, err := netlink.LinkByName(r.Dev)
	if err != nil {
		return nil, err
	}
	nr.LinkIndex = link.Attrs().Index
	nr.Scope = netlink.SCOPE_LINK
	return nr, nil
}

// ReplaceTableRoute installs r, replacing the route to the same
// destination with the same metric in its table (one with another metric
// stays). It is idempotent.
func ReplaceTableRoute(r TableRoute) error {
	nr, err := tableRoute(r)
	if err != nil {
		return fmt.Errorf("replace route %s: %w", r, err)
	}
	if err := netlink.RouteReplace(nr); err != nil {
		return fmt.Errorf("replace route %s: %w", r, err)
	}
	return nil
}

// DeleteTableRoute removes r: for a route through a link, the one through
// that link (any metric); for an unreachable route, the one with r's
// metric. A missing route or link is not an error.
func DeleteTableRoute(r TableRoute) error {
	nr, err := tableRoute(r)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("delete route %s: %w", r, err)
	}
	if err := netlink.RouteDel(nr); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete route %s: %w", r, err)
	}
	return nil
}

// TableRoutes reads back every route in table (both families), as the
// kernel has them: routes through a link name it, unreachable ones none
// but carry their metric (a route through a link reads back with metric 0,
// whatever the kernel's default made it).
func TableRoutes(table int) ([]TableRoute, error) {
	filter := &netlink.Route{Table: table}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes of table %d: %w", table, err)
	}
	var out []TableRoute
	for _, r := range routes {
		tr := TableRoute{Table: table, Unreachable: r.Type == unix.RTN_UNREACHABLE}
		if tr.Unreachable {
			tr.Metric = r.Priority
		}
		if r.Type != unix.RTN_UNICAST && !tr.Unreachable {
			continue
		}
		if r.Dst == nil {
			tr.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
			if r.Family == netlink.FAMILY_V6 {
				tr.Dst = netip.PrefixFrom(netip.IPv6Unspecified(), 0)
			}
		} else if p, ok := prefixOf(r.Dst); ok {
			tr.Dst = p
		} else {
			continue
		}
		if !tr.Unreachable {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				tr.Dev = l.Attrs().Name
			}
		}
		out = append(out, tr)
	}
	return out, nil
}

// ruleRequest sends r as RTM_NEWRULE or RTM_DELRULE. It is built by hand:
// vishvananda/netlink drops suppress_prefixlength for tables >= 256.
func ruleRequest(op int, flags int, r Rule) error {
	req := nl.NewNetlinkRequest(op, flags|unix.NLM_F_ACK)
	msg := nl.NewRtMsg()
	msg.Family = unix.AF_INET
	if r.V6 {
		msg.Family = unix.AF_INET6
	}
	msg.Protocol = unix.RTPROT_BOOT
	msg.Scope = unix.RT_SCOPE_UNIVERSE
	msg.Type = unix.FR_ACT_TO_TBL
	msg.Table = unix.RT_TABLE_UNSPEC
	if r.Table < 256 {
		msg.Table = uint8(r.Table)
	}
	if r.NotMark != 0 {
		msg.Flags |= unix.FIB_RULE_INVERT
	}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(nl.FRA_PRIORITY, nl.Uint32Attr(uint32(r.Priority))))
	req.AddData(nl.NewRtAttr(nl.FRA_TABLE, nl.Uint32Attr(uint32(r.Table))))
	if r.NotMark != 0 {
		req.AddData(nl.NewRtAttr(nl.FRA_FWMARK, nl.Uint32Attr(r.NotMark)))
		req.AddData(nl.NewRtAttr(nl.FRA_FWMASK, nl.Uint32Attr(0xffffffff)))
	}
	if r.SuppressPrefixlen >= 0 {
		req.AddData(nl.NewRtAttr(nl.FRA_SUPPRESS_PREFIXLEN, nl.Uint32Attr(uint32(r.SuppressPrefixlen))))
	}
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// AddRule installs r unless an identical rule is already there.
func AddRule(r Rule) error {
	have, err := Rules(r.Table)
	if err != nil {
		return err
	}
	if slices.Contains(have, r) {
		return nil
	}
	if err := ruleRequest(unix.RTM_NEWRULE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, r); err != nil {
		return fmt.Errorf("add rule %s: %w", r, err)
	}
	return nil
}

// DeleteRule removes r; a missing rule is not an error.
func DeleteRule(r Rule) error {
	if err := ruleRequest(unix.RTM_DELRULE, 0, r); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete rule %s: %w", r, err)
	}
	return nil
}

// Rules reads back the rules of both families whose action is a lookup of
// table, or, for TableMain, rules that look up main with a suppress_prefixlength
// (the kernel's own `lookup main` rule has none and is left out).
func Rules(table int) ([]Rule, error) {
	var out []Rule
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, err := netlink.RuleList(fam)
		if err != nil {
			return nil, fmt.Errorf("list rules: %w", err)
		}
		for _, nr := range rs {
			if nr.Table != table || nr.Goto >= 0 || nr.Src != nil || nr.Dst != nil || nr.IifName != "" || nr.OifName != "" {
				continue
			}
			r := Rule{V6: fam == netlink.FAMILY_V6, Priority: nr.Priority, Table: nr.Table, SuppressPrefixlen: nr.SuppressPrefixlen}
			if nr.Invert {
				r.NotMark = nr.Mark
			} else if nr.Mark != 0 {
				continue
			}
			if table == TableMain && r.SuppressPrefixlen < 0 {
				continue
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// ConnectedPrefixes lists the networks the laptop is directly on: link
// scope routes of the main table on every link but loopback and except
// (the TUN), both families, IPv6 link-local ones left out.
func ConnectedPrefixes(except string) ([]netip.Prefix, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list connected networks: %w", err)
	}
	var out []netip.Prefix
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST || r.Scope != netlink.SCOPE_LINK && !(r.Family == netlink.FAMILY_V6 && r.Gw == nil && r.Protocol == unix.RTPROT_KERNEL) {
			continue
		}
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil || l.Attrs().Name == except || l.Attrs().Flags&net.FlagLoopback != 0 {
			continue
		}
		p, ok := prefixOf(r.Dst)
		if !ok || p.Bits() == 0 || p.Addr().IsLinkLocalUnicast() || slices.Contains(out, p) {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// RemoveAddress removes address p from link name; a missing address or
// link is not an error. The laptop uses it when a gateway stops giving the
// device an address of one family (SetAddress replaces within a family).
func RemoveAddress(name string, p netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("remove address %s from %s: %w", p, name, err)
	}
	if err := netlink.AddrDel(link, &netlink.Addr{IPNet: ipNet(p)}); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("remove address %s from %s: %w", p, name, err)
	}
	return nil
}
