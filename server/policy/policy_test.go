package policy

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/tunnel/packet"
)

const fp = "3f4a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8"

var alice = pki.Identity{
	Device:      "laptop-alice",
	User:        "alice",
	Groups:      []string{"eng", "oncall"},
	Orgs:        []string{"Acme"},
	Issuer:      `CN=Acme Device CA,O=Acme\, Inc.`,
	Serial:      "5a3b01",
	Fingerprint: fp,
	DNSNames:    []string{"Alice.Laptops.Acme.Example."},
	Emails:      []string{"Alice@Acme.Example"},
	URIs:        []string{"spiffe://acme/device/alice"},
}

func TestMatch(t *testing.T) {
	tests := []struct {
		name string
		m    Match
		want bool
	}{
		{"cn exact", Match{CN: []string{"laptop-alice"}}, true},
		{"cn glob", Match{CN: []string{"laptop-*"}}, true},
		{"cn star", Match{CN: []string{"*"}}, true},
		{"cn other", Match{CN: []string{"laptop-bob"}}, false},
		{"cn case sensitive", Match{CN: []string{"Laptop-alice"}}, false},
		{"cn or", Match{CN: []string{"nope", "laptop-a?ice"}}, true},
		{"ou any group", Match{OU: []string{"oncall"}}, true},
		{"ou class", Match{OU: []string{"[ef]ng"}}, true},
		{"ou missing", Match{OU: []string{"sales"}}, false},
		{"o", Match{O: []string{"Acme"}}, true},
		{"and both", Match{OU: []string{"eng"}, User: []string{"alice"}}, true},
		{"and one fails", Match{OU: []string{"eng"}, User: []string{"bob"}}, false},
		{"user glob", Match{User: []string{"a*"}}, true},
		{"san dns case", Match{SANDNS: []string{"*.laptops.acme.example"}}, true},
		{"san dns trailing dot in pattern", Match{SANDNS: []string{"ALICE.laptops.acme.example."}}, true},
		{"san dns no", Match{SANDNS: []string{"*.servers.acme.example"}}, false},
		{"san email case", Match{SANEmail: []string{"*@acme.example"}}, true},
		{"san uri glob", Match{SANURI: []string{"spiffe://acme/device/*"}}, true},
		{"san uri star does not cross /", Match{SANURI: []string{"spiffe://acme/*"}}, false},
		{"issuer full dn", Match{Issuer: []string{`CN=Acme Device CA,O=Acme\, Inc.`}}, true},
		{"issuer cn only", Match{Issuer: []string{"Acme Device CA"}}, true},
		{"issuer cn glob", Match{Issuer: []string{"Acme *"}}, true},
		{"issuer other", Match{Issuer: []string{"Other CA"}}, false},
		{"issuer o is not cn", Match{Issuer: []string{"Acme, Inc."}}, false},
		{"fingerprint canonical", Match{Fingerprint: []string{fp}}, true},
		{"fingerprint colons upper", Match{Fingerprint: []string{colons(strings.ToUpper(fp))}}, true},
		{"fingerprint prefixed", Match{Fingerprint: []string{"SHA256 Fingerprint=" + colons(fp)}}, true},
		{"fingerprint other", Match{Fingerprint: []string{strings.Repeat("ab", 32)}}, false},
		{"serial canonical", Match{Serial: []string{"5a3b01"}}, true},
		{"serial colons upper", Match{Serial: []string{"5A:3B:01"}}, true},
		{"serial 0x leading zero", Match{Serial: []string{"0x005a3b01"}}, true},
		{"serial decimal", Match{Serial: []string{fmt.Sprintf("d:%d", 0x5a3b01)}}, true},
		{"serial other", Match{Serial: []string{"5a3b02"}}, false},
		{"everything", Match{CN: []string{"laptop-*"}, OU: []string{"eng"}, O: []string{"Acme"}, User: []string{"alice"},
			SANDNS: []string{"alice.*"}, SANEmail: []string{"alice@*"}, SANURI: []string{"spiffe://*/*/alice"},
			Issuer: []string{"Acme Device CA"}, Fingerprint: []string{fp}, Serial: []string{"5a3b01"}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Compile([]Policy{{Name: "p", Match: tt.m}})
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Lookup(alice) != nil; got != tt.want {
				t.Fatalf("matched = %v, want %v", got, tt.want)
			}
		})
	}
}

func colons(h string) string {
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

func TestMatchMissingAttributes(t *testing.T) {
	bare := pki.Identity{Device: "box"}
	for _, m := range []Match{
		{User: []string{"*"}}, {OU: []string{"*"}}, {SANDNS: []string{"*"}}, {Issuer: []string{"*"}},
		{Fingerprint: []string{fp}}, {Serial: []string{"1"}},
	} {
		s, err := Compile([]Policy{{Name: "p", Match: m}})
		if err != nil {
			t.Fatal(err)
		}
		if s.Lookup(bare) != nil {
			t.Errorf("%+v matched an identity without that attribute", m)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	ok := Match{CN: []string{"*"}}
	tests := []struct {
		name string
		ps   []Policy
		want []string // substrings of the error
		key  string   // Error.Key: where in the policy
	}{
		{"empty name", []Policy{{Match: ok}}, []string{"policy #1", "name is empty"}, "name"},
		{"blank name", []Policy{{Name: "a", Match: ok}, {Name: "  ", Match: ok}}, []string{"policy #2"}, "name"},
		{"duplicate", []Policy{{Name: "a", Match: ok}, {Name: "a", Match: ok}}, []string{`"a"`, "duplicate"}, "name"},
		{"empty match", []Policy{{Name: "a"}}, []string{`"a"`, "match selects nothing"}, "match"},
		{"empty key", []Policy{{Name: "a", Match: Match{OU: []string{}}}}, []string{"match.ou has no values"}, "match.ou"},
		{"empty pattern", []Policy{{Name: "a", Match: Match{CN: []string{""}}}}, []string{"match.cn: empty pattern"}, "match.cn"},
		{"bad glob", []Policy{{Name: "eng", Match: Match{OU: []string{"en[g"}}}}, []string{`policy "eng"`, `match.ou "en[g"`, "bad glob"}, "match.ou"},
		{"bad glob tail", []Policy{{Name: "eng", Match: Match{CN: []string{"x\\"}}}}, []string{"match.cn", "bad glob"}, "match.cn"},
		{"bad fingerprint", []Policy{{Name: "a", Match: Match{Fingerprint: []string{"abc"}}}}, []string{"match.fingerprint", `"abc"`}, "match.fingerprint"},
		{"bad serial", []Policy{{Name: "a", Match: Match{Serial: []string{"xyz"}}}}, []string{"match.serial", `"xyz"`}, "match.serial"},
		{"bad allow cidr", []Policy{{Name: "eng", Match: ok, Allow: []string{"10.0.0.0/33"}}}, []string{`policy "eng"`, `allow "10.0.0.0/33"`, "bad CIDR"}, "allow"},
		{"bad proto", []Policy{{Name: "eng", Match: ok, Allow: []string{"10.0.0.0/8 sctp"}}}, []string{`allow "10.0.0.0/8 sctp"`, `unknown protocol "sctp"`}, "allow"},
		{"bad route", []Policy{{Name: "eng", Match: ok, Routes: []string{"10.0.0/8"}}}, []string{`routes "10.0.0/8"`}, "routes"},
		{"route any", []Policy{{Name: "eng", Match: ok, Routes: []string{"any"}}}, []string{`routes "any"`}, "routes"},
		{"bad dns", []Policy{{Name: "eng", Match: ok, DNS: []string{"10.0.0.300"}}}, []string{`dns "10.0.0.300"`}, "dns"},
		{"bad dns chars", []Policy{{Name: "eng", Match: ok, DNS: []string{"corp example"}}}, []string{`dns "corp example"`}, "dns"},
		{"zoned dns", []Policy{{Name: "eng", Match: ok, DNS: []string{"fe80::1%eth0"}}}, []string{"zoned"}, "dns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Compile(tt.ps)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			// Which policy and key, for the config's file:line.
			var pe *Error
			if !errors.As(err, &pe) || pe.Key != tt.key || pe.Index != len(tt.ps)-1 {
				t.Errorf("error %q: %+v, want policy #%d key %q", err, pe, len(tt.ps), tt.key)
			}
		})
	}
}

func TestParseAllow(t *testing.T) {
	tests := []struct {
		in   string
		want []string // canonical forms; nil = error
	}{
		{"192.168.77.0/24", []string{"192.168.77.0/24"}},
		{"192.168.77.9/24", []string{"192.168.77.0/24"}},
		{"192.168.77.9", []string{"192.168.77.9/32"}},
		{"fd00::1", []string{"fd00::1/128"}},
		{"  10.0.0.0/8   TCP/22 ", []string{"10.0.0.0/8 tcp/22"}},
		{"10.0.0.0/8 tcp/8000-8100", []string{"10.0.0.0/8 tcp/8000-8100"}},
		{"10.0.0.0/8 tcp/80-80", []string{"10.0.0.0/8 tcp/80"}},
		{"10.0.0.0/8 tcp", []string{"10.0.0.0/8 tcp"}},
		{"10.0.0.0/8 tcp/0-65535", []string{"10.0.0.0/8 tcp"}},
		{"10.0.0.0/8 udp/53", []string{"10.0.0.0/8 udp/53"}},
		{"10.0.0.0/8 icmp", []string{"10.0.0.0/8 icmp"}},
		{"fd00::/64 icmp", []string{"fd00::/64 icmp"}},
		{"fd00::/64 icmpv6", []string{"fd00::/64 icmp"}},
		{"any", []string{"0.0.0.0/0", "::/0"}},
		{"any udp/53", []string{"0.0.0.0/0 udp/53", "::/0 udp/53"}},
		{"", nil},
		{"10.0.0.0/8 tcp 22", nil},
		{"10.0.0.0/8 icmp/8", nil},
		{"10.0.0.0/8 icmpv6", nil},
		{"10.0.0.0/8 tcp/", nil},
		{"10.0.0.0/8 tcp/65536", nil},
		{"10.0.0.0/8 tcp/-1", nil},
		{"10.0.0.0/8 tcp/+1", nil},
		{"10.0.0.0/8 tcp/100-90", nil},
		{"10.0.0.0/8 tcp/1-2-3", nil},
		{"10.0.0.0/8 tcp/http", nil},
		{"10.0.0.0/8 sctp", nil},
		{"10.0.0.0", []string{"10.0.0.0/32"}},
		{"10.0.0", nil},
		{"fe80::1%eth0", nil},
		{"::ffff:10.0.0.0/104", nil},
		{"example.com", nil},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			rs, err := ParseAllow(tt.in)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("no error, got %v", rs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range rs {
				got = append(got, r.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func info(dst string, proto uint8, port uint16) *packet.Info {
	return &packet.Info{Proto: proto, Src: netip.MustParseAddr("10.8.0.2"), Dst: netip.MustParseAddr(dst), DstPort: port, SrcPort: 40000}
}

func TestAllows(t *testing.T) {
	allow := []string{
		"192.168.77.0/24 tcp/22",
		"192.168.77.0/24 tcp/8000-8100",
		"192.168.77.53 udp/53",
		"192.168.77.0/24 icmp",
		"10.1.0.0/16",
		"10.2.0.0/16 udp",
		"fd00:77::/64 tcp/443",
		"fd00:77::/64 icmp",
	}
	frag := func(p *packet.Info) *packet.Info {
		p.Fragment, p.FragOffset, p.DstPort, p.SrcPort = true, 1480, 0, 0
		return p
	}
	tests := []struct {
		name string
		p    *packet.Info
		want bool
	}{
		{"ssh", info("192.168.77.10", packet.ProtoTCP, 22), true},
		{"tcp 23", info("192.168.77.10", packet.ProtoTCP, 23), false},
		{"range lo", info("192.168.77.10", packet.ProtoTCP, 8000), true},
		{"range hi", info("192.168.77.10", packet.ProtoTCP, 8100), true},
		{"range above", info("192.168.77.10", packet.ProtoTCP, 8101), false},
		{"udp 22", info("192.168.77.10", packet.ProtoUDP, 22), false},
		{"dns host", info("192.168.77.53", packet.ProtoUDP, 53), true},
		{"dns other host", info("192.168.77.54", packet.ProtoUDP, 53), false},
		{"icmp v4", info("192.168.77.10", packet.ProtoICMP, 7), true},
		{"icmpv6 to v4", info("192.168.77.10", packet.ProtoICMPv6, 7), false},
		{"outside", info("192.168.78.10", packet.ProtoTCP, 22), false},
		{"any proto", info("10.1.2.3", 47, 0), true},
		{"any proto tcp", info("10.1.2.3", packet.ProtoTCP, 9), true},
		{"udp all ports", info("10.2.2.3", packet.ProtoUDP, 9), true},
		{"udp rule, tcp", info("10.2.2.3", packet.ProtoTCP, 9), false},
		{"v6 https", info("fd00:77::10", packet.ProtoTCP, 443), true},
		{"v6 http", info("fd00:77::10", packet.ProtoTCP, 80), false},
		{"v6 icmpv6", info("fd00:77::10", packet.ProtoICMPv6, 1), true},
		{"v6 icmpv4 proto", info("fd00:77::10", packet.ProtoICMP, 1), false},
		{"v4-mapped v6 not v4", info("::ffff:10.1.2.3", packet.ProtoTCP, 1), false},
		{"frag: port rule only", frag(info("192.168.77.10", packet.ProtoTCP, 22)), false},
		{"frag: all-ports proto rule", frag(info("10.2.2.3", packet.ProtoUDP, 0)), true},
		{"frag: any-proto rule", frag(info("10.1.2.3", packet.ProtoUDP, 0)), true},
		{"frag: icmp rule", frag(info("192.168.77.10", packet.ProtoICMP, 0)), true},
		{"first fragment uses ports", func() *packet.Info { p := info("192.168.77.10", packet.ProtoTCP, 22); p.Fragment = true; return p }(), true},
		{"invalid dst", &packet.Info{Proto: packet.ProtoTCP}, false},
	}
	for _, lm := range []int{16, 0} { // linear tables and per-length maps
		linearMax = lm
		s, err := Compile([]Policy{{Name: "p", Match: Match{CN: []string{"*"}}, Allow: allow}})
		if err != nil {
			t.Fatal(err)
		}
		g := s.Lookup(alice)
		for _, tt := range tests {
			t.Run(fmt.Sprintf("linear%d/%s", lm, tt.name), func(t *testing.T) {
				if got := g.Allows(tt.p); got != tt.want {
					t.Fatalf("Allows = %v, want %v", got, tt.want)
				}
			})
		}
	}
	linearMax = 16
	var nilGrant *Grant
	if nilGrant.Allows(info("10.1.2.3", packet.ProtoTCP, 1)) {
		t.Fatal("nil grant allowed")
	}
}

func TestUnionAndGrant(t *testing.T) {
	ps := []Policy{
		{Name: "eng", Match: Match{OU: []string{"eng"}}, Allow: []string{"192.168.77.0/24 tcp/22", "192.168.77.7/24 icmp"},
			DNS: []string{"192.168.77.53", "Corp.Example.", "192.168.77.53"}},
		{Name: "sales", Match: Match{OU: []string{"sales"}}, Allow: []string{"10.9.0.0/16"}},
		{Name: "oncall", Match: Match{OU: []string{"oncall"}}, Allow: []string{"10.5.0.0/16 tcp", "192.168.77.0/24 tcp/22"},
			Routes: []string{"10.0.0.0/8", "10.1.2.3/8", "192.168.77.1"}, DNS: []string{"corp.example", "fd00::53"}},
		{Name: "quiet", Match: Match{User: []string{"alice"}}, Allow: []string{"172.16.0.0/12"}, Routes: []string{}},
	}
	s, err := Compile(ps)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Names(); !slices.Equal(got, []string{"eng", "sales", "oncall", "quiet"}) {
		t.Fatalf("Names %v", got)
	}
	g := s.Lookup(alice)
	if g == nil {
		t.Fatal("no grant")
	}
	if !slices.Equal(g.Names, []string{"eng", "oncall", "quiet"}) {
		t.Errorf("Names %v", g.Names)
	}
	wantAllow := []string{"192.168.77.0/24 tcp/22", "192.168.77.0/24 icmp", "10.5.0.0/16 tcp", "172.16.0.0/12"}
	if !slices.Equal(g.Allow, wantAllow) {
		t.Errorf("Allow %q, want %q", g.Allow, wantAllow)
	}
	wantRoutes := []netip.Prefix{netip.MustParsePrefix("192.168.77.0/24"), netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.77.1/32")}
	if !slices.Equal(g.Routes, wantRoutes) {
		t.Errorf("Routes %v, want %v", g.Routes, wantRoutes)
	}
	if want := []netip.Addr{netip.MustParseAddr("192.168.77.53"), netip.MustParseAddr("fd00::53")}; !slices.Equal(g.DNS, want) {
		t.Errorf("DNS %v", g.DNS)
	}
	if !slices.Equal(g.SearchDomains, []string{"corp.example"}) {
		t.Errorf("SearchDomains %v", g.SearchDomains)
	}
	for _, c := range []struct {
		p    *packet.Info
		want bool
	}{
		{info("192.168.77.4", packet.ProtoTCP, 22), true},
		{info("10.5.1.1", packet.ProtoTCP, 9999), true},
		{info("172.20.0.1", packet.ProtoUDP, 1), true},
		{info("10.9.0.1", packet.ProtoUDP, 1), false}, // sales not matched
	} {
		if g.Allows(c.p) != c.want {
			t.Errorf("Allows(%v %d) != %v", c.p.Dst, c.p.DstPort, c.want)
		}
	}
	// Same matching policies -> same shared grant.
	other := alice
	other.Device = "laptop-alice2"
	if s.Lookup(other) != g {
		t.Error("grant not shared")
	}
	if s.Lookup(pki.Identity{Device: "x", Groups: []string{"hr"}}) != nil {
		t.Error("unmatched identity got a grant")
	}
	s2, _ := Compile(ps)
	if !s2.Lookup(alice).Equal(g) || g.Equal(s2.Lookup(pki.Identity{Groups: []string{"sales"}})) || g.Equal(nil) {
		t.Error("Equal")
	}
	var nilSet *Set
	if nilSet.Lookup(alice) != nil {
		t.Error("nil set")
	}
}

func TestTOML(t *testing.T) {
	const doc = `
[[policy]]
name = "engineering"
match = { ou = ["eng"], fingerprint = ["` + fp + `"] }
allow = ["192.168.77.0/24", "10.0.0.1 udp/53"]
dns = ["10.0.0.1", "corp.example"]

[[policy]]
name = "none"
match = { cn = ["*"] }
routes = []
`
	var cfg struct {
		Policy []Policy `toml:"policy"`
	}
	md, err := toml.Decode(doc, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if u := md.Undecoded(); len(u) != 0 {
		t.Fatalf("undecoded keys %v", u)
	}
	s, err := Compile(cfg.Policy)
	if err != nil {
		t.Fatal(err)
	}
	g := s.Lookup(alice)
	if !slices.Equal(g.Names, []string{"engineering", "none"}) {
		t.Fatalf("Names %v", g.Names)
	}
	want := []netip.Prefix{netip.MustParsePrefix("192.168.77.0/24"), netip.MustParsePrefix("10.0.0.1/32")}
	if !slices.Equal(g.Routes, want) {
		t.Fatalf("Routes %v", g.Routes)
	}
	g2 := s.Lookup(pki.Identity{Device: "x"})
	if len(g2.Routes) != 0 || len(g2.Allow) != 0 {
		t.Fatalf("explicit empty routes / no allow: %+v", g2)
	}
}

// naive is the reference semantics for Allows.
func naive(rules []Rule, p *packet.Info) bool {
	for _, r := range rules {
		if !r.Prefix.Contains(p.Dst) {
			continue
		}
		if r.Proto == 0 {
			return true
		}
		if r.Proto != p.Proto {
			continue
		}
		if r.Proto == packet.ProtoICMP || r.Proto == packet.ProtoICMPv6 {
			return true
		}
		if p.FragOffset != 0 {
			if r.AllPorts() {
				return true
			}
			continue
		}
		if r.PortLo <= p.DstPort && p.DstPort <= r.PortHi {
			return true
		}
	}
	return false
}

func randRules(rng *rand.Rand, n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		var a string
		if rng.IntN(4) == 0 {
			a = fmt.Sprintf("fd00:%x::%x/%d", rng.IntN(4), rng.IntN(256), 16+rng.IntN(113))
		} else {
			a = fmt.Sprintf("10.%d.%d.%d/%d", rng.IntN(4), rng.IntN(4), rng.IntN(256), 8+rng.IntN(25))
		}
		lo := rng.IntN(100)
		switch rng.IntN(7) {
		case 1:
			a += " tcp"
		case 2:
			a += " udp"
		case 3:
			a += " icmp"
		case 4:
			a += fmt.Sprintf(" tcp/%d", lo)
		case 5:
			a += fmt.Sprintf(" udp/%d", lo)
		case 6:
			a += fmt.Sprintf(" tcp/%d-%d", lo, lo+rng.IntN(50))
		}
		out = append(out, a)
	}
	return out
}

func TestAllowsDifferential(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 40; round++ {
		allow := randRules(rng, 1+rng.IntN(60))
		var rules []Rule
		for _, a := range allow {
			rs, err := ParseAllow(a)
			if err != nil {
				t.Fatalf("%q: %v", a, err)
			}
			rules = append(rules, rs...)
		}
		linearMax = []int{0, 4, 16}[round%3] // exercise maps, mixed, linear
		g := &Grant{filter: buildFilter(slices.Clone(rules))}
		linearMax = 16
		for i := 0; i < 500; i++ {
			var dst netip.Addr
			if rng.IntN(4) == 0 {
				dst = netip.MustParseAddr(fmt.Sprintf("fd00:%x::%x", rng.IntN(4), rng.IntN(256)))
			} else {
				dst = netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(4)), byte(rng.IntN(256))})
			}
			p := &packet.Info{Dst: dst, Proto: []uint8{1, 6, 17, 58, 47}[rng.IntN(5)], DstPort: uint16(rng.IntN(160))}
			if rng.IntN(8) == 0 {
				p.Fragment, p.FragOffset, p.DstPort = true, 8, 0
			}
			if got, want := g.Allows(p), naive(rules, p); got != want {
				t.Fatalf("round %d: Allows(%v proto %d port %d frag %d) = %v, naive %v; rules %q",
					round, p.Dst, p.Proto, p.DstPort, p.FragOffset, got, want, allow)
			}
		}
	}
}

func TestAllowsNoAlloc(t *testing.T) {
	linearMax = 0
	defer func() { linearMax = 16 }()
	s, _ := Compile([]Policy{{Name: "p", Match: Match{CN: []string{"*"}}, Allow: []string{"10.0.0.0/8 tcp/22", "fd00::/8 udp", "192.168.0.0/16"}}})
	g := s.Lookup(alice)
	p4, p6 := info("10.1.1.1", packet.ProtoTCP, 22), info("fd00::1", packet.ProtoUDP, 5)
	if n := testing.AllocsPerRun(100, func() { g.Allows(p4); g.Allows(p6) }); n != 0 {
		t.Fatalf("allocs %v", n)
	}
}

func FuzzParseAllow(f *testing.F) {
	for _, s := range []string{"10.0.0.0/8", "10.0.0.1 tcp/22", "fd00::/64 icmp", "any udp/53-60", "1.2.3.4/33 tcp/1-", "x y z"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := ParseAllow(s)
		if err != nil {
			return
		}
		for _, r := range rs {
			if r.Prefix != r.Prefix.Masked() || r.PortLo > r.PortHi {
				t.Fatalf("%q: bad rule %+v", s, r)
			}
			again, err := ParseAllow(r.String())
			if err != nil || len(again) != 1 || again[0] != r {
				t.Fatalf("%q: round trip of %q gave %v, %v", s, r.String(), again, err)
			}
		}
	})
}

func BenchmarkAllows(b *testing.B) {
	for _, n := range []int{4, 1000} {
		allow := []string{"192.168.77.0/24 tcp/22", "fd00::/64 udp/53"}
		for i := 0; len(allow) < n; i++ {
			allow = append(allow, fmt.Sprintf("10.%d.%d.0/%d tcp/%d", i>>8&255, i&255, 24+i%8, 1000+i%50))
		}
		// A gateway with a handful of addresses of its own (own.go): every
		// allowed packet is also checked against them.
		own := NewOwn(netip.MustParseAddr("192.168.77.1"), netip.MustParseAddr("10.8.0.1"), netip.MustParseAddr("203.0.113.7"), netip.MustParseAddr("fd00:8::1"))
		s, err := CompileOwn([]Policy{{Name: "p", Match: Match{CN: []string{"*"}}, Allow: allow}}, own)
		if err != nil {
			b.Fatal(err)
		}
		g := s.Lookup(alice)
		for _, c := range []struct {
			name string
			p    *packet.Info
		}{
			{"hit", info("192.168.77.10", packet.ProtoTCP, 22)},
			{"miss", info("172.16.0.1", packet.ProtoTCP, 22)},
			{"own", info("192.168.77.1", packet.ProtoTCP, 22)},
		} {
			b.Run(fmt.Sprintf("rules=%d/%s", n, c.name), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					g.Allows(c.p)
				}
			})
		}
	}
}

func TestSetRoutes(t *testing.T) {
	s, err := Compile([]Policy{
		{Name: "a", Match: Match{CN: []string{"*"}}, Allow: []string{"192.168.77.0/24", "fd00:77::/64 tcp/443"}},
		{Name: "b", Match: Match{CN: []string{"*"}}, Allow: []string{"10.0.0.0/8"}, Routes: []string{"0.0.0.0/0", "::/0", "192.168.77.9/24"}},
		{Name: "c", Match: Match{CN: []string{"*"}}, Allow: []string{"10.1.0.0/16"}, Routes: []string{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(s.Routes())
	if want := "[192.168.77.0/24 fd00:77::/64 0.0.0.0/0 ::/0]"; got != want {
		t.Fatalf("Routes() = %s, want %s", got, want)
	}
}

// kill_switch across matching policies: any true wins, else any false,
// else nothing is pushed (the laptop decides). A change shows in Equal, so
// a reload pushes it to live sessions.
func TestKillSwitchUnion(t *testing.T) {
	on, off := true, false
	ps := []Policy{
		{Name: "full", Match: Match{OU: []string{"full"}}, Allow: []string{"10.0.0.0/8"}, KillSwitch: &on},
		{Name: "relaxed", Match: Match{OU: []string{"relaxed"}}, Allow: []string{"10.0.0.0/8"}, KillSwitch: &off},
		{Name: "plain", Match: Match{OU: []string{"plain"}}, Allow: []string{"10.0.0.0/8"}},
	}
	s, err := Compile(ps)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ous  []string
		want *bool
	}{
		{[]string{"plain"}, nil},
		{[]string{"relaxed"}, &off},
		{[]string{"full"}, &on},
		{[]string{"relaxed", "full"}, &on},
		{[]string{"full", "relaxed"}, &on},
		{[]string{"plain", "relaxed"}, &off},
	}
	for _, tt := range tests {
		g := s.Lookup(pki.Identity{Device: "d", User: "u", Groups: tt.ous})
		if g == nil {
			t.Fatalf("%v: no grant", tt.ous)
		}
		if (g.KillSwitch == nil) != (tt.want == nil) || (g.KillSwitch != nil && *g.KillSwitch != *tt.want) {
			t.Errorf("%v: kill switch %v, want %v", tt.ous, g.KillSwitch, tt.want)
		}
	}
	a := s.Lookup(pki.Identity{Device: "d", User: "u", Groups: []string{"plain"}})
	b, _ := Compile([]Policy{{Name: "plain", Match: Match{OU: []string{"plain"}}, Allow: []string{"10.0.0.0/8"}, KillSwitch: &on}})
	if a.Equal(b.Lookup(pki.Identity{Device: "d", User: "u", Groups: []string{"plain"}})) {
		t.Error("grants differing only in kill_switch compare equal")
	}
}

// TestNormalizeDomainEdges: a search domain at exactly each limit passes,
// one past it fails; the character classes end where they should.
func TestNormalizeDomainEdges(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	name253 := strings.Repeat(strings.Repeat("b", 49)+".", 5) + "corp" + strings.Repeat("x", 3) // 5*50 + 7 = 257
	name253 = name253[len(name253)-253:]
	if name253[0] == '.' {
		t.Fatal("test name starts with a dot")
	}
	for _, tt := range []struct {
		in string
		ok bool
	}{
		{label63 + ".corp", true},
		{label63 + "a.corp", false},
		{name253, true},
		{"c" + name253, false},
		{"az09-_.corp", true},
		{"za.corp", true},
		{"x9.corp", true},
		{"x0.corp", true},
		{"a`b.corp", false}, // '`' is just before 'a'
		{"a{b.corp", false}, // '{' is just after 'z'
		{"a/b.corp", false}, // '/' is just before '0'
		{"a:b.corp", false}, // ':' is just after '9'
	} {
		_, err := normalizeDomain(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("normalizeDomain(%q) = %v, want ok %v", tt.in, err, tt.ok)
		}
	}
}

// TestHardwareKeyUnion: a device matching several policies must hold its
// key in hardware when any of them demands it, wherever that policy stands
// in the file: a broad policy matched first does not lift the demand of a
// group's. Mutation caught: taking require_hardware_key from the first
// matching policy only.
func TestHardwareKeyUnion(t *testing.T) {
	s, err := Compile([]Policy{
		{Name: "everyone", Match: Match{OU: []string{"staff"}}, Allow: []string{"10.1.0.0/16"}},
		{Name: "eng", Match: Match{OU: []string{"eng"}}, Allow: []string{"10.2.0.0/16"}, RequireHardwareKey: true},
		{Name: "ops", Match: Match{OU: []string{"ops"}}, Allow: []string{"10.3.0.0/16"}, RequireHardwareKey: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		ous  []string
		want string
	}{
		{[]string{"staff"}, ""},
		{[]string{"eng"}, "eng"},
		{[]string{"staff", "eng"}, "eng"},
		{[]string{"eng", "staff"}, "eng"},
		{[]string{"staff", "ops", "eng"}, "eng"},
	} {
		g := s.Lookup(pki.Identity{Device: "d", User: "u", Groups: tt.ous})
		if g == nil {
			t.Fatalf("%v: no grant", tt.ous)
		}
		if g.RequireHardwareKey != tt.want {
			t.Errorf("%v: hardware key required by %q, want %q", tt.ous, g.RequireHardwareKey, tt.want)
		}
	}
}
