package server

// The masquerade table (nat.go) in nftables, written with
// github.com/google/nftables over netlink: no `nft` binary needed under
// the unit's CAP_NET_ADMIN, and the table is created or replaced in one
// atomic transaction.

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// installNAT creates (or atomically replaces, after a crash) the table:
// one postrouting NAT chain with a masquerade rule per pool and interface.
func installNAT(s natSpec) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("NAT: nftables: %w", err)
	}
	t := &nftables.Table{Name: s.Table, Family: nftables.TableFamilyINet}
	c.AddTable(t) // so that the delete below cannot fail
	c.DelTable(t)
	c.AddTable(t)
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{
		Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept,
	})
	for _, r := range natRules(s) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: r})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("NAT: install table inet %s: %w", s.Table, err)
	}
	return nil
}

// natRules: for every pool and interface, "meta nfproto ipvX, ip(6) saddr
// in pool, oifname iface: masquerade".
func natRules(s natSpec) [][]expr.Any {
	var rs [][]expr.Any
	for _, p := range s.Pools {
		for _, dev := range s.Out {
			r := append(saddrIn(p), natOifname(dev)...)
			rs = append(rs, append(r, &expr.Masq{}))
		}
	}
	return rs
}

// saddrIn matches packets of p's family whose source is in p.
func saddrIn(p netip.Prefix) []expr.Any {
	proto, off := byte(unix.NFPROTO_IPV4), uint32(12)
	if p.Addr().Is6() {
		proto, off = unix.NFPROTO_IPV6, 8
	}
	n := uint32(p.Addr().BitLen() / 8)
	mask := net.CIDRMask(p.Bits(), p.Addr().BitLen())
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// natOifname matches the output interface by name.
func natOifname(name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
}

// removeNAT deletes the table; a missing table is not an error.
func removeNAT(table string) error {
	ok, err := natTableExists(table)
	if err != nil || !ok {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("NAT: nftables: %w", err)
	}
	c.DelTable(&nftables.Table{Name: table, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("NAT: remove table inet %s: %w", table, err)
	}
	return nil
}

// natTableExists reports whether the table is in the kernel.
func natTableExists(table string) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("NAT: nftables: %w", err)
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("NAT: list nftables tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == table {
			return true, nil
		}
	}
	return false, nil
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
