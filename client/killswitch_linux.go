package client

// The kill switch in nftables (killswitch.go says what it allows), through
// internal/nft (netlink: no `nft` binary, one atomic transaction per change,
// so the rules are never half there). killTable says which rules;
// killswitch_linux_test.go compares them to golden rule sets without root.

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/sallyport/sallyport/internal/nft"
)

// installKillSwitch creates (or atomically replaces) the kill switch's
// table for s: the old table, if any, is deleted and the new one added in
// the same transaction, so there is no moment without the rules.
func installKillSwitch(s killSpec) error {
	c, err := nft.Dial()
	if err != nil {
		return fmt.Errorf("kill switch: %w", err)
	}
	if err := nft.Install(c, killTable(s)); err != nil {
		return fmt.Errorf("kill switch: %w", err)
	}
	return nil
}

// removeKillSwitch deletes the table; a missing table is not an error.
func removeKillSwitch(table string) error {
	c, err := nft.Dial()
	if err != nil {
		return fmt.Errorf("kill switch: %w", err)
	}
	if err := nft.Remove(c, table); err != nil {
		return fmt.Errorf("kill switch: %w", err)
	}
	return nil
}

// killSwitchExists reports whether the table is in the kernel.
func killSwitchExists(table string) (bool, error) {
	c, err := nft.Dial()
	if err != nil {
		return false, fmt.Errorf("kill switch: %w", err)
	}
	return nft.Exists(c, table)
}

// killTable is the table for s: an output chain that drops what no rule
// accepts.
func killTable(s killSpec) nft.Table {
	drop := nftables.ChainPolicyDrop
	t := nft.Table{Name: s.Table, Chain: nftables.Chain{
		Name: "output", Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &drop,
	}}
	for _, e := range killRules(s) {
		t.Rules = append(t.Rules, append(e, nft.Accept()))
	}
	return t
}

// killRules is the match part of every accept rule, in order.
func killRules(s killSpec) [][]expr.Any {
	var rs [][]expr.Any
	rs = append(rs, nft.Oifname("lo"), nft.Oifname(s.Dev))
	for _, g := range s.Gateways {
		r := append(nft.Mark(s.Mark), nft.L4Port(unix.IPPROTO_TCP, nft.DstPort, g.Port)...)
		if g.Addr.IsValid() {
			r = append(r, nft.Daddr(netip.PrefixFrom(g.Addr, g.Addr.BitLen()))...)
		}
		rs = append(rs, r)
	}
	if s.DNS {
		rs = append(rs,
			append(nft.Mark(s.Mark), nft.L4Port(unix.IPPROTO_UDP, nft.DstPort, 53)...),
			append(nft.Mark(s.Mark), nft.L4Port(unix.IPPROTO_TCP, nft.DstPort, 53)...))
	}
	// DHCP and DHCPv6 clients, router and neighbour discovery.
	rs = append(rs,
		append(nft.NFProto(unix.NFPROTO_IPV4), append(nft.L4Port(unix.IPPROTO_UDP, nft.SrcPort, 68), nft.Port(nft.DstPort, 67)...)...),
		append(nft.NFProto(unix.NFPROTO_IPV6), append(nft.L4Port(unix.IPPROTO_UDP, nft.SrcPort, 546), nft.Port(nft.DstPort, 547)...)...))
	for _, typ := range []byte{133, 135, 136} { // router solicitation, neighbour solicitation/advertisement
		rs = append(rs, append(nft.NFProto(unix.NFPROTO_IPV6), nft.ICMPv6Type(typ)...))
	}
	for _, p := range s.LAN {
		rs = append(rs, nft.Daddr(p))
	}
	return rs
}
