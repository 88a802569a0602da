package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// LinkUp sets the MTU of link name (when mtu > 0) and brings it up.
func LinkUp(name string, mtu int) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link up %s: %w", name, err)
	}
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("link %s: set MTU %d: %w", name, mtu, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("link up %s: %w", name, err)
	}
	return nil
}

// SetAddress makes p the only address of its family on link name (IPv6
// link-local addresses are kept). It is idempotent, and the link keeps p and
// its routes through an address change, also when p is in the old
// address's subnet.
func SetAddress(name string, p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("set address on %s: invalid prefix %q", name, p)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("set address %s on %s: %w", p, name, err)
	}
	family := netlink.FAMILY_V4
	if p.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(link, family)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	// Add first, then remove the others: removing a link's last IPv4
	// address makes the kernel flush every IPv4 route via the link. A new
	// IPv4 address in the same subnet as the old one is added as its
	// secondary, and with promote_secondaries=0 (the kernel default)
	// deleting the primary deletes its secondaries too; so promotion is
	// switched on for the link first. IPv6 has no primaries.
	if family == netlink.FAMILY_V4 {
		if err := promoteSecondaries(link); err != nil {
			return fmt.Errorf("set address %s on %s: %w", p, name, err)
		}
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: ipNet(p)}); err != nil {
		return fmt.Errorf("add address %s to %s: %w", p, name, err)
	}
	for _, a := range addrs {
		ap, ok := prefixOf(a.IPNet)
		if !ok || ap == p || ap.Addr().IsLinkLocalUnicast() {
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove address %s from %s: %w", ap, name, err)
		}
	}
	return nil
}

// ipv4DevconfPromoteSecondaries is IPV4_DEVCONF_PROMOTE_SECONDARIES from
// linux/ip.h (not in x/sys/unix).
const ipv4DevconfPromoteSecondaries = 20

// promoteSecondaries sets net.ipv4.conf.<link>.promote_secondaries=1 through
// netlink (RTM_SETLINK, IFLA_AF_SPEC/AF_INET/IFLA_INET_CONF), so deleting
// the primary IPv4 address of a subnet promotes a secondary instead of
// deleting it. Netlink, unlike /proc/sys, works under systemd's
// ProtectKernelTunables and needs only CAP_NET_ADMIN.
func promoteSecondaries(link netlink.Link) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(link.Attrs().Index)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	conf := spec.AddRtAttr(unix.AF_INET, nil).AddRtAttr(unix.IFLA_INET_CONF, nil)
	conf.AddRtAttr(ipv4DevconfPromoteSecondaries, nl.Uint32Attr(1))
	req.AddData(spec)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("enable promote_secondaries on %s: %w", link.Attrs().Name, err)
	}
	return nil
}

// ReplaceRoute routes dst (canonicalised) through link name in the main
// table, replacing any route to the same destination. It is idempotent.
func ReplaceRoute(name string, dst netip.Prefix) error {
	r, err := linkRoute(name, dst)
	if err != nil {
		return fmt.Errorf("replace route %s dev %s: %w", dst, name, err)
	}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("replace route %s dev %s: %w", dst.Masked(), name, err)
	}
	return nil
}

// DeleteRoute removes the route to dst via link name. A missing route (or
// a missing link, which takes its routes with it) is not an error.
func DeleteRoute(name string, dst netip.Prefix) error {
	r, err := linkRoute(name, dst)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("delete route %s dev %s: %w", dst, name, err)
	}
	if err := netlink.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete route %s dev %s: %w", dst.Masked(), name, err)
	}
	return nil
}

// LinkRoutes lists the destinations of unicast routes via link name in the
// main table, both families, including those the kernel adds for the link's
// own addresses (proto kernel) and IPv6 link-local ones.
func LinkRoutes(name string) ([]netip.Prefix, error) {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("list routes of %s: %w", name, err)
	}
	filter := &netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes of %s: %w", name, err)
	}
	var out []netip.Prefix
	for _, r := range routes {
		if r.Type != unix.RTN_UNICAST {
			continue
		}
		if r.Dst == nil {
			if r.Family == netlink.FAMILY_V6 {
				out = append(out, netip.PrefixFrom(netip.IPv6Unspecified(), 0))
			} else {
				out = append(out, netip.PrefixFrom(netip.IPv4Unspecified(), 0))
			}
			continue
		}
		if p, ok := prefixOf(r.Dst); ok {
			out = append(out, p)
		}
	}
	return out, nil
}

func linkRoute(name string, dst netip.Prefix) (*netlink.Route, error) {
	if !dst.IsValid() {
		return nil, fmt.Errorf("invalid prefix %q", dst)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, err
	}
	return &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       ipNet(dst.Masked()),
		Scope:     netlink.SCOPE_LINK,
		Table:     unix.RT_TABLE_MAIN,
	}, nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{
		IP:   net.IP(p.Addr().AsSlice()),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	if bits == 32 {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, ones), true
}
