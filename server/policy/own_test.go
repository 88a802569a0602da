package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/tunnel/packet"
)

// TestOwnAddresses: an address of the gateway itself is reached only
// through a rule naming it alone, with that rule's protocol and ports; a
// network or "any" rule that merely covers it does not open it. Loopback
// is always the gateway's own. The set can change under live grants.
func TestOwnAddresses(t *testing.T) {
	gwLAN, gwTun, gwTun6 := "10.0.0.2", "10.8.0.1", "fd00:8::1"
	own := NewOwn(netip.MustParseAddr(gwLAN), netip.MustParseAddr(gwTun), netip.MustParseAddr(gwTun6))
	frag := func(p *packet.Info) *packet.Info { p.FragOffset = 100; return p }
	tests := []struct {
		name  string
		allow []string
		p     *packet.Info
		want  bool
	}{
		{"network rule, other host", []string{"10.0.0.0/8"}, info("10.0.0.5", packet.ProtoTCP, 80), true},
		{"network rule covers the gateway", []string{"10.0.0.0/8"}, info(gwLAN, packet.ProtoTCP, 9580), false},
		{"named for ssh: ssh", []string{"10.0.0.0/8", gwLAN + " tcp/22"}, info(gwLAN, packet.ProtoTCP, 22), true},
		{"named for ssh: metrics", []string{"10.0.0.0/8", gwLAN + " tcp/22"}, info(gwLAN, packet.ProtoTCP, 9580), false},
		{"named for ssh: a fragment", []string{gwLAN + " tcp/22"}, frag(info(gwLAN, packet.ProtoTCP, 0)), false},
		{"named whole", []string{gwLAN}, info(gwLAN, packet.ProtoUDP, 161), true},
		{"a /31 does not name it", []string{"10.0.0.2/31"}, info(gwLAN, packet.ProtoTCP, 22), false},
		{"full tunnel: the internet", []string{"any"}, info("198.51.100.7", packet.ProtoTCP, 443), true},
		{"full tunnel: the tunnel address", []string{"any"}, info(gwTun, packet.ProtoICMP, 0), false},
		{"pool rule: the tunnel address", []string{"10.8.0.0/24"}, info(gwTun, packet.ProtoTCP, 22), false},
		{"v6 network rule", []string{"fd00:8::/64"}, info(gwTun6, packet.ProtoTCP, 22), false},
		{"v6 named for icmp", []string{"fd00:8::/64", gwTun6 + " icmp"}, info(gwTun6, packet.ProtoICMPv6, 0), true},
		{"loopback under any", []string{"any"}, info("127.0.0.1", packet.ProtoTCP, 22), false},
		{"v6 loopback under any", []string{"any"}, info("::1", packet.ProtoTCP, 22), false},
		{"all-hosts multicast under any", []string{"any"}, info("224.0.0.1", packet.ProtoUDP, 161), false},
		{"mDNS multicast under any", []string{"any"}, info("224.0.0.251", packet.ProtoUDP, 5353), false},
		{"limited broadcast under any", []string{"any"}, info("255.255.255.255", packet.ProtoUDP, 67), false},
		{"v6 all-nodes under any", []string{"any"}, info("ff02::1", packet.ProtoUDP, 161), false},
		{"v6 site multicast under any", []string{"any"}, info("ff05::1:3", packet.ProtoUDP, 547), false},
		{"v4-mapped gateway address under any", []string{"any"}, info("::ffff:"+gwTun, packet.ProtoUDP, 161), false},
		{"multicast named alone", []string{"224.0.0.251 udp/5353"}, info("224.0.0.251", packet.ProtoUDP, 5353), true},
	}
	for _, lm := range []int{16, 0} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("linear%d/%s", lm, tt.name), func(t *testing.T) {
				old := linearMax
				linearMax = lm
				defer func() { linearMax = old }()
				s, err := CompileOwn([]Policy{{Name: "p", Match: Match{CN: []string{"*"}}, Allow: tt.allow}}, own)
				if err != nil {
					t.Fatal(err)
				}
				g := s.Lookup(alice)
				if got := g.Allows(tt.p); got != tt.want {
					t.Fatalf("allow %v: %s proto %d port %d: %v, want %v", tt.allow, tt.p.Dst, tt.p.Proto, tt.p.DstPort, got, tt.want)
				}
				if tt.p.FragOffset == 0 && tt.want && !g.AllowsSome(tt.p.Dst) {
					t.Fatalf("AllowsSome(%s) false where a packet passes", tt.p.Dst)
				}
			})
		}
	}

	// The bare-address verdict follows the same rule.
	s, _ := CompileOwn([]Policy{{Name: "p", Match: Match{CN: []string{"*"}}, Allow: []string{"10.0.0.0/8"}}}, own)
	g := s.Lookup(alice)
	if g.AllowsSome(netip.MustParseAddr(gwLAN)) || !g.AllowsSome(netip.MustParseAddr("10.0.0.3")) {
		t.Fatal("AllowsSome ignores the gateway's own address")
	}
	// A live grant follows a new set: the address moved off the gateway.
	own.Set([]netip.Addr{netip.MustParseAddr(gwTun)})
	if !g.Allows(info(gwLAN, packet.ProtoTCP, 9580)) {
		t.Fatal("an address the gateway no longer holds stays closed")
	}
	// A set past the linear scan is a map; same answers.
	var many []netip.Addr
	for i := range 40 {
		many = append(many, netip.AddrFrom4([4]byte{10, 0, 1, byte(i)}))
	}
	own.Set(append(many, netip.MustParseAddr(gwLAN)))
	if g.Allows(info(gwLAN, packet.ProtoTCP, 9580)) || g.Allows(info("10.0.1.39", packet.ProtoTCP, 1)) || !g.Allows(info("10.0.1.40", packet.ProtoTCP, 1)) {
		t.Fatal("a large own set gives other answers")
	}
}

// TestExplainOwn: policy explain says why a gateway address is denied
// under a rule that covers it, and names the rule that opens it.
func TestExplainOwn(t *testing.T) {
	own := NewOwn(netip.MustParseAddr("10.0.0.2"))
	s, _ := CompileOwn([]Policy{{Name: "p", Match: Match{CN: []string{"*"}}, Allow: []string{"10.0.0.0/8", "10.0.0.2 tcp/22"}}}, own)
	d, _ := ParseDestination("10.0.0.2:9580/tcp")
	e := s.Explain(alice, nil, d)
	if e.Allowed || !e.Own || !strings.Contains(e.Format(), "10.0.0.2 is an address of the gateway itself") ||
		!strings.Contains(e.Format(), `covers the address but does not name it (or not this protocol/port): 10.0.0.0/8 (policy "p")`) {
		t.Fatalf("metrics port:\n%s", e.Format())
	}
	d, _ = ParseDestination("10.0.0.2:22/tcp")
	if e = s.Explain(alice, nil, d); !e.Allowed || e.Rule != "10.0.0.2/32 tcp/22" {
		t.Fatalf("ssh, named:\n%s", e.Format())
	}
	d, _ = ParseDestination("10.0.0.2")
	if e = s.Explain(alice, nil, d); !e.Allowed || e.Rule != "10.0.0.2/32 tcp/22" {
		t.Fatalf("bare address, named for ssh:\n%s", e.Format())
	}
}

// TestUnreachableDNS: a policy pushing a gateway address as DNS server
// without an allow rule naming it for DNS is reported.
func TestUnreachableDNS(t *testing.T) {
	own := NewOwn(netip.MustParseAddr("10.8.0.1"))
	s, err := CompileOwn([]Policy{
		{Name: "bad", Match: Match{CN: []string{"*"}}, Allow: []string{"10.8.0.0/24"}, DNS: []string{"10.8.0.1"}},
		{Name: "good", Match: Match{CN: []string{"*"}}, Allow: []string{"10.8.0.1 udp/53"}, DNS: []string{"10.8.0.1", "10.0.0.53"}},
	}, own)
	if err != nil {
		t.Fatal(err)
	}
	w := s.UnreachableDNS()
	if len(w) != 1 || !strings.Contains(w[0], `policy "bad" pushes the DNS server 10.8.0.1`) {
		t.Fatalf("warnings %q", w)
	}
}
