package client

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/nft"
	"github.com/sallyport/sallyport/internal/nft/nfttest"
)

// TestKillSwitchRulesGolden: the kill switch's table, without root,
// against the rule sets it must be (TestKillSwitchKernel checks the same
// rules in the kernel, as root). The exceptions are the thief's targets:
// each must be exactly this narrow.
func TestKillSwitchRulesGolden(t *testing.T) {
	const chain = "add chain inet sallyport-sp0 output { type filter hook output priority 0; policy drop; }"
	common := []string{
		`oifname "lo" accept`,
		`oifname "sp0" accept`,
	}
	local := []string{
		"meta nfproto ipv4 meta l4proto udp th sport 68 th dport 67 accept",
		"meta nfproto ipv6 meta l4proto udp th sport 546 th dport 547 accept",
		"meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 133 accept",
		"meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 135 accept",
		"meta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type 136 accept",
	}
	for _, tt := range []struct {
		name    string
		servers []string
		lan     []netip.Prefix
		rules   []string // between the common ones and the local-link ones
		after   []string // allow_lan
	}{
		{"literal gateways", []string{"192.168.50.1:8443", "[2001:db8:50::1]:8443"}, nil, []string{
			"meta mark 0x00005350 meta l4proto tcp th dport 8443 meta nfproto ipv4 ip daddr 192.168.50.1/32 accept",
			"meta mark 0x00005350 meta l4proto tcp th dport 8443 meta nfproto ipv6 ip6 daddr 2001:db8:50::1/128 accept",
		}, nil},
		{"gateway by name: its port anywhere, and DNS, marked", []string{"gw.example:443"}, nil, []string{
			"meta mark 0x00005350 meta l4proto tcp th dport 443 accept",
			"meta mark 0x00005350 meta l4proto udp th dport 53 accept",
			"meta mark 0x00005350 meta l4proto tcp th dport 53 accept",
		}, nil},
		{"allow_lan", []string{"192.168.50.1:8443"}, []netip.Prefix{netip.MustParsePrefix("192.168.50.0/24"), netip.MustParsePrefix("fd12::/64")}, []string{
			"meta mark 0x00005350 meta l4proto tcp th dport 8443 meta nfproto ipv4 ip daddr 192.168.50.1/32 accept",
		}, []string{
			"meta nfproto ipv4 ip daddr 192.168.50.0/24 accept",
			"meta nfproto ipv6 ip6 daddr fd12::/64 accept",
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var rec nfttest.Recorder
			if err := nft.Install(&rec, killTable(newKillSpec("sp0", 0x5350, tt.servers, tt.lan))); err != nil {
				t.Fatal(err)
			}
			if len(rec.Ops) < 4 || rec.Ops[3] != chain || rec.Ops[len(rec.Ops)-1] != "flush" {
				t.Fatalf("table lifecycle:\n%s", strings.Join(rec.Ops, "\n"))
			}
			want := slices.Concat(common, tt.rules, local, tt.after)
			if got := rec.Rules(); !slices.Equal(got, want) {
				t.Fatalf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}
