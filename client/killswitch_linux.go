package client

// The kill switch in nftables (killswitch.go says what it allows), written
// with github.com/google/nftables over netlink: no `nft` binary, one atomic
// transaction per change, so the rules are never half there.

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// installKillSwitch creates (or atomically replaces) the kill switch's
// table for s: the old table, if any, is deleted and the new one added in
// the same transaction, so there is no moment without the rules.
func installKillSwitch(s killSpec) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("kill switch: nftables: %w", err)
	}
	t := &nftables.Table{Name: s.Table, Family: nftables.TableFamilyINet}
	c.AddTable(t) // so that the delete below cannot fail
	c.DelTable(t)
	c.AddTable(t)
	drop := nftables.ChainPolicyDrop
	out := c.AddChain(&nftables.Chain{
		Name: "output", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &drop,
	})
	for _, e := range killRules(s) {
		c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: append(e, &expr.Verdict{Kind: expr.VerdictAccept})})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("kill switch: install table inet %s: %w", s.Table, err)
	}
	return nil
}

// removeKillSwitch deletes the table; a missing table is not an error.
func removeKillSwitch(table string) error {
	ok, err := killSwitchExists(table)
	if err != nil || !ok {
		return err
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("kill switch: nftables: %w", err)
	}
	c.DelTable(&nftables.Table{Name: table, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("kill switch: remove table inet %s: %w", table, err)
	}
	return nil
}

// killSwitchExists reports whether the table is in the kernel.
func killSwitchExists(table string) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("kill switch: nftables: %w", err)
	}
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("kill switch: list nftables tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == table {
			return true, nil
		}
	}
	return false, nil
}

// killRules is the match part of every accept rule, in order.
func killRules(s killSpec) [][]expr.Any {
	var rs [][]expr.Any
	rs = append(rs, oifname("lo"), oifname(s.Dev))
	mark := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(s.Mark)},
	}
	for _, g := range s.Gateways {
		r := append(clone(mark), l4port(unix.IPPROTO_TCP, 2, g.Port)...)
		if g.Addr.IsValid() {
			r = append(r, daddr(netip.PrefixFrom(g.Addr, g.Addr.BitLen()))...)
		}
		rs = append(rs, r)
	}
	if s.DNS {
		rs = append(rs,
			append(clone(mark), l4port(unix.IPPROTO_UDP, 2, 53)...),
			append(clone(mark), l4port(unix.IPPROTO_TCP, 2, 53)...))
	}
	// DHCP and DHCPv6 clients, router and neighbour discovery.
	rs = append(rs,
		append(nfproto(unix.NFPROTO_IPV4), append(l4port(unix.IPPROTO_UDP, 0, 68), port(2, 67)...)...),
		append(nfproto(unix.NFPROTO_IPV6), append(l4port(unix.IPPROTO_UDP, 0, 546), port(2, 547)...)...))
	for _, typ := range []byte{133, 135, 136} { // router solicitation, neighbour solicitation/advertisement
		rs = append(rs, append(nfproto(unix.NFPROTO_IPV6),
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_ICMPV6}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{typ}}))
	}
	for _, p := range s.LAN {
		rs = append(rs, daddr(p))
	}
	return rs
}

func clone(e []expr.Any) []expr.Any { return append([]expr.Any(nil), e...) }

// oifname matches the output interface by name (the TUN is recreated with a
// new index on every start).
func oifname(name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
}

func nfproto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// l4port matches transport protocol proto and the port at offset (0
// source, 2 destination).
func l4port(proto byte, offset uint32, p uint16) []expr.Any {
	return append([]expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}, port(offset, p)...)
}

func port(offset uint32, p uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)},
	}
}

// daddr matches the destination address against prefix p (its family too).
func daddr(p netip.Prefix) []expr.Any {
	p = p.Masked()
	fam, off, n := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if p.Addr().Is6() {
		fam, off, n = unix.NFPROTO_IPV6, 24, 16
	}
	e := append(nfproto(fam), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n})
	if p.Bits() < p.Addr().BitLen() {
		m := make([]byte, n)
		for i := 0; i < p.Bits(); i++ {
			m[i/8] |= 0x80 >> (i % 8)
		}
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: m, Xor: make([]byte, n)})
	}
	return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()})
}
