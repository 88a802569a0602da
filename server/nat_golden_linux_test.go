package server

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/nft"
	"github.com/sallyport/sallyport/internal/nft/nfttest"
)

// TestNATRulesGolden: the masquerade table, without root, against the rule
// set it must be: a NAT postrouting chain, and for every pool and
// interface a rule matching the pool as the SOURCE (packets from the
// devices) and the interface as the output. Matching the destination
// instead would masquerade nothing the devices send (and anything the LAN
// sends to them); TestNATTable as root only counts rules.
func TestNATRulesGolden(t *testing.T) {
	spec := natSpec{Table: natTableName("sp0"), Out: []string{"eth1", "eth2"},
		Pools: []netip.Prefix{netip.MustParsePrefix("10.8.0.0/24"), netip.MustParsePrefix("fd00:8::/64")}}
	var rec nfttest.Recorder
	if err := nft.Install(&rec, natTable(spec)); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"add table inet sallyport-gw-sp0",
		"delete table inet sallyport-gw-sp0",
		"add table inet sallyport-gw-sp0",
		"add chain inet sallyport-gw-sp0 postrouting { type nat hook postrouting priority 100; policy accept; }",
		`add rule inet sallyport-gw-sp0 postrouting meta nfproto ipv4 ip saddr 10.8.0.0/24 oifname "eth1" masquerade`,
		`add rule inet sallyport-gw-sp0 postrouting meta nfproto ipv4 ip saddr 10.8.0.0/24 oifname "eth2" masquerade`,
		`add rule inet sallyport-gw-sp0 postrouting meta nfproto ipv6 ip6 saddr fd00:8::/64 oifname "eth1" masquerade`,
		`add rule inet sallyport-gw-sp0 postrouting meta nfproto ipv6 ip6 saddr fd00:8::/64 oifname "eth2" masquerade`,
		"flush",
	}
	if !slices.Equal(rec.Ops, want) {
		t.Fatalf("NAT table:\n%s\nwant:\n%s", strings.Join(rec.Ops, "\n"), strings.Join(want, "\n"))
	}
}
