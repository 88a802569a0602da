package nft

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/sallyport/sallyport/internal/nft/nfttest"
)

// TestInstallReplacesInOneTransaction: the table is added, deleted and
// added again before its chain and rules, all in one flush, so a table a
// crash left behind is replaced without a moment with no rules.
func TestInstallReplacesInOneTransaction(t *testing.T) {
	var rec nfttest.Recorder
	drop := nftables.ChainPolicyDrop
	err := Install(&rec, Table{
		Name:  "sallyport-sp0",
		Chain: nftables.Chain{Name: "output", Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityFilter, Policy: &drop},
		Rules: [][]expr.Any{append(Oifname("lo"), Accept()), append(Daddr(netip.MustParsePrefix("192.168.1.0/24")), Accept())},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"add table inet sallyport-sp0",
		"delete table inet sallyport-sp0",
		"add table inet sallyport-sp0",
		"add chain inet sallyport-sp0 output { type filter hook output priority 0; policy drop; }",
		`add rule inet sallyport-sp0 output oifname "lo" accept`,
		"add rule inet sallyport-sp0 output meta nfproto ipv4 ip daddr 192.168.1.0/24 accept",
		"flush",
	}
	if !slices.Equal(rec.Ops, want) {
		t.Fatalf("operations:\n%s\nwant:\n%s", strings.Join(rec.Ops, "\n"), strings.Join(want, "\n"))
	}
	rec = nfttest.Recorder{FlushErr: errors.New("netlink: permission denied")}
	if err := Install(&rec, Table{Name: "x"}); err == nil || !strings.Contains(err.Error(), "install table inet x") {
		t.Fatalf("failed flush: %v", err)
	}
}

// TestRemove: a missing table sends nothing; a present one is deleted in
// one flush; ENOENT (gone in between) is not an error, other errors are.
func TestRemove(t *testing.T) {
	var rec nfttest.Recorder
	if err := Remove(&rec, "sallyport-sp0"); err != nil || len(rec.Ops) != 0 {
		t.Fatalf("missing table: %v, ops %v", err, rec.Ops)
	}
	rec = nfttest.Recorder{Tables: []string{"other", "sallyport-sp0"}}
	if err := Remove(&rec, "sallyport-sp0"); err != nil || !slices.Equal(rec.Ops, []string{"delete table inet sallyport-sp0", "flush"}) {
		t.Fatalf("present table: %v, ops %v", err, rec.Ops)
	}
	rec = nfttest.Recorder{Tables: []string{"sallyport-sp0"}, FlushErr: unix.ENOENT}
	if err := Remove(&rec, "sallyport-sp0"); err != nil {
		t.Fatalf("ENOENT: %v", err)
	}
	rec = nfttest.Recorder{Tables: []string{"sallyport-sp0"}, FlushErr: unix.EPERM}
	if err := Remove(&rec, "sallyport-sp0"); err == nil {
		t.Fatal("EPERM ignored")
	}
	rec = nfttest.Recorder{ListErr: unix.EPERM}
	if ok, err := Exists(&rec, "x"); ok || err == nil {
		t.Fatalf("list error: %v %v", ok, err)
	}
}

// TestMatchers: each matcher reads as the nft match it stands for; source
// and destination are different fields in both families.
func TestMatchers(t *testing.T) {
	for _, tt := range []struct {
		got  []expr.Any
		want string
	}{
		{Saddr(netip.MustParsePrefix("10.8.0.0/24")), "meta nfproto ipv4 ip saddr 10.8.0.0/24"},
		{Daddr(netip.MustParsePrefix("10.8.0.7/24")), "meta nfproto ipv4 ip daddr 10.8.0.0/24"},
		{Saddr(netip.MustParsePrefix("fd00:8::/112")), "meta nfproto ipv6 ip6 saddr fd00:8::/112"},
		{Daddr(netip.MustParsePrefix("fd00:8::1/128")), "meta nfproto ipv6 ip6 daddr fd00:8::1/128"},
		{Oifname("eth0"), `oifname "eth0"`},
		{L4Port(unix.IPPROTO_TCP, DstPort, 443), "meta l4proto tcp th dport 443"},
		{L4Port(unix.IPPROTO_UDP, SrcPort, 68), "meta l4proto udp th sport 68"},
		{ICMPv6Type(135), "meta l4proto ipv6-icmp icmpv6 type 135"},
		{Mark(0x5350), "meta mark 0x00005350"},
		{[]expr.Any{Masquerade()}, "masquerade"},
	} {
		if got := nfttest.Render(tt.got); got != tt.want {
			t.Errorf("%s, want %s", got, tt.want)
		}
	}
}
