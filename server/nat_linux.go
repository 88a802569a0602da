package server

// The masquerade table (nat.go) in nftables, through internal/nft (netlink:
// no `nft` binary needed under the unit's CAP_NET_ADMIN, and the table is
// created or replaced in one atomic transaction). natTable says which
// rules; nat_linux_test.go compares them to a golden rule set.

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/sallyport/sallyport/internal/nft"
)

// installNAT creates (or atomically replaces, after a crash) the table.
func installNAT(s natSpec) error {
	c, err := nft.Dial()
	if err != nil {
		return fmt.Errorf("NAT: %w", err)
	}
	if err := nft.Install(c, natTable(s)); err != nil {
		return fmt.Errorf("NAT: %w", err)
	}
	return nil
}

// natTable is the table for s: one postrouting NAT chain with, for every
// pool and interface, "ip(6) saddr in pool, oifname iface: masquerade".
func natTable(s natSpec) nft.Table {
	accept := nftables.ChainPolicyAccept
	t := nft.Table{Name: s.Table, Chain: nftables.Chain{
		Name: "postrouting", Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept,
	}}
	for _, p := range s.Pools {
		for _, dev := range s.Out {
			r := append(nft.Saddr(p), nft.Oifname(dev)...)
			t.Rules = append(t.Rules, append(r, nft.Masquerade()))
		}
	}
	return t
}

// removeNAT deletes the table; a missing table is not an error.
func removeNAT(table string) error {
	c, err := nft.Dial()
	if err != nil {
		return fmt.Errorf("NAT: %w", err)
	}
	if err := nft.Remove(c, table); err != nil {
		return fmt.Errorf("NAT: %w", err)
	}
	return nil
}

// autoInterfaces returns the interfaces the kernel routes the pushed
// routes through (the default routes' interfaces for 0.0.0.0/0 and ::/0),
// without the TUN itself and loopback.
func autoInterfaces(routes []netip.Prefix, tun string) ([]string, error) {
	var idx []int
	for _, r := range routes {
		if r.Bits() == 0 {
			family := netlink.FAMILY_V4
			if r.Addr().Is6() {
				family = netlink.FAMILY_V6
			}
			def, err := netlink.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
			if err != nil {
				return nil, fmt.Errorf("list routes: %w", err)
			}
			for _, d := range def {
				if d.Dst == nil || d.Dst.IP.IsUnspecified() {
					idx = append(idx, d.LinkIndex)
				}
			}
			continue
		}
		got, err := netlink.RouteGet(r.Addr().AsSlice())
		if err != nil {
			continue // no route to it at all: nothing to NAT towards
		}
		for _, g := range got {
			idx = append(idx, g.LinkIndex)
		}
	}
	var out []string
	for _, i := range idx {
		l, err := netlink.LinkByIndex(i)
		if err != nil {
			continue
		}
		n := l.Attrs().Name
		if n == tun || n == "lo" || slices.Contains(out, n) {
			continue
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}
