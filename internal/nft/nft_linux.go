package nft

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Conn is the part of *nftables.Conn this package uses: a batch of table,
// chain and rule operations sent by Flush as one transaction, and a lookup.
type Conn interface {
	AddTable(*nftables.Table) *nftables.Table
	DelTable(*nftables.Table)
	AddChain(*nftables.Chain) *nftables.Chain
	AddRule(*nftables.Rule) *nftables.Rule
	Flush() error
	ListTablesOfFamily(nftables.TableFamily) ([]*nftables.Table, error)
}

// Dial opens a netlink connection to the kernel's nftables.
func Dial() (Conn, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return c, nil
}

// Table is one table of ours: family inet, Name, one base chain and its
// rules, each ending in its own verdict or statement.
type Table struct {
	Name  string
	Chain nftables.Chain // Name, Type, Hooknum, Priority, Policy; Table is set by Install
	Rules [][]expr.Any
}

// Install creates t, or replaces the table of that name if one exists (left
// by a crash): add, delete and add again in the same transaction, so the
// delete cannot fail and there is no moment without the rules.
func Install(c Conn, t Table) error {
	tab := &nftables.Table{Name: t.Name, Family: nftables.TableFamilyINet}
	c.AddTable(tab)
	c.DelTable(tab)
	c.AddTable(tab)
	ch := t.Chain
	ch.Table = tab
	chain := c.AddChain(&ch)
	for _, r := range t.Rules {
		c.AddRule(&nftables.Rule{Table: tab, Chain: chain, Exprs: r})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("install table inet %s: %w", t.Name, err)
	}
	return nil
}

// Remove deletes the table name; a table that is not there is not an
// error (nothing is sent then).
func Remove(c Conn, name string) error {
	ok, err := Exists(c, name)
	if err != nil || !ok {
		return err
	}
	c.DelTable(&nftables.Table{Name: name, Family: nftables.TableFamilyINet})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove table inet %s: %w", name, err)
	}
	return nil
}

// Exists reports whether the inet table name is in the kernel.
func Exists(c Conn, name string) (bool, error) {
	ts, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return false, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range ts {
		if t.Name == name {
			return true, nil
		}
	}
	return false, nil
}

// Oifname matches the output interface by name (a TUN is recreated with a
// new index on every start, so never by index).
func Oifname(name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}
}

// NFProto matches the packet's family (unix.NFPROTO_IPV4 or _IPV6).
func NFProto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}},
	}
}

// L4Proto matches the transport protocol.
func L4Proto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

// Port offsets in the transport header.
const (
	SrcPort = 0
	DstPort = 2
)

// L4Port matches transport protocol proto and the port p at offset
// (SrcPort or DstPort).
func L4Port(proto byte, offset uint32, p uint16) []expr.Any {
	return append(L4Proto(proto), Port(offset, p)...)
}

// Port matches the port at offset of the transport header (after an
// L4Proto match of a protocol with ports).
func Port(offset uint32, p uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: offset, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(p)},
	}
}

// ICMPv6Type matches an ICMPv6 message of type typ.
func ICMPv6Type(typ byte) []expr.Any {
	return append(L4Proto(unix.IPPROTO_ICMPV6),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{typ}})
}

// Mark matches the packet's fwmark.
func Mark(m uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(m)},
	}
}

// Saddr matches packets of p's family whose source address is in p.
func Saddr(p netip.Prefix) []expr.Any { return addrIn(p, true) }

// Daddr matches packets of p's family whose destination address is in p.
func Daddr(p netip.Prefix) []expr.Any { return addrIn(p, false) }

func addrIn(p netip.Prefix, src bool) []expr.Any {
	p = p.Masked()
	fam, off, n := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4) // IPv4 daddr
	if p.Addr().Is6() {
		fam, off, n = unix.NFPROTO_IPV6, 24, 16 // IPv6 daddr
	}
	if src {
		off -= n // saddr is right before daddr in both headers
	}
	e := append(NFProto(fam), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n})
	if p.Bits() < p.Addr().BitLen() {
		m := make([]byte, n)
		for i := 0; i < p.Bits(); i++ {
			m[i/8] |= 0x80 >> (i % 8)
		}
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: m, Xor: make([]byte, n)})
	}
	return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Addr().AsSlice()})
}

// Accept ends a rule by accepting the packet.
func Accept() expr.Any { return &expr.Verdict{Kind: expr.VerdictAccept} }

// Masquerade ends a rule by source-NATting the packet to the outgoing
// interface's address.
func Masquerade() expr.Any { return &expr.Masq{} }
