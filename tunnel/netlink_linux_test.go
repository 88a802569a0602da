package tunnel

// Route helpers the device tests use on a test TUN (the data plane itself
// sets only addresses and the link; the laptop's routes are
// client/policyroute's).

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// replaceRoute routes dst (canonicalised) through link name in the main
// table, replacing any route to the same destination. It is idempotent.
func replaceRoute(name string, dst netip.Prefix) error {
	r, err := linkRoute(name, dst)
	if err != nil {
		return fmt.Errorf("replace route %s dev %s: %w", dst, name, err)
	}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("replace route %s dev %s: %w", dst.Masked(), name, err)
	}
	return nil
}

// deleteRoute removes the route to dst via link name. A missing route (or
// a missing link, which takes its routes with it) is not an error.
func deleteRoute(name string, dst netip.Prefix) error {
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

// linkRoutes lists the destinations of unicast routes via link name in the
// main table, both families, including those the kernel adds for the link's
// own addresses (proto kernel) and IPv6 link-local ones.
func linkRoutes(name string) ([]netip.Prefix, error) {
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
