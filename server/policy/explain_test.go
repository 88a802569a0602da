package policy

import (
	"crypto/x509"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/pki"
)

var demo = []Policy{
	{Name: "engineering", Match: Match{OU: []string{"eng"}}, Allow: []string{"10.1.0.0/16 tcp/22", "10.1.0.0/16 tcp/8000-8100", "10.1.2.3 icmp"}},
	{Name: "dns", Match: Match{CN: []string{"*"}}, Allow: []string{"10.0.0.53 udp/53"}},
	{Name: "ops", Match: Match{OU: []string{"ops"}, User: []string{"root-*"}}, Allow: []string{"10.0.0.0/8"}},
}

func TestParseDestination(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"10.1.2.3", "10.1.2.3", ""},
		{"10.1.2.3:22/tcp", "10.1.2.3:22/tcp", ""},
		{"10.1.2.3:53/UDP", "10.1.2.3:53/udp", ""},
		{"10.1.2.3/icmp", "10.1.2.3/icmp", ""},
		{"[fd00::1]:53/udp", "[fd00::1]:53/udp", ""},
		{"fd00::1/icmp", "fd00::1/icmp", ""},
		{"10.1.2.3:22", "", "needs a protocol"},
		{"10.1.2.3/tcp", "", "needs a port"},
		{"10.1.2.3:0/tcp", "", "not 1-65535"},
		{"10.1.2.3:70000/tcp", "", "not 1-65535"},
		{"10.1.2.3:22/sctp", "", "not tcp, udp or icmp"},
		{"10.1.2.3:1/icmp", "", "no port"},
		{"fd00::1:53/udp", "", "needs a port"}, // an IPv6 address, no port: brackets needed
		{"host.example:22/tcp", "", "not an IP address"},
		{"", "", "want ADDR"},
	} {
		d, err := ParseDestination(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || d.String() != tc.want {
			t.Errorf("%q: %v %v, want %s", tc.in, d, err, tc.want)
		}
	}
}

func TestExplain(t *testing.T) {
	set, err := Compile(demo)
	if err != nil {
		t.Fatal(err)
	}
	eng := IdentityFor("alice", "alice", []string{"eng"}, nil, "")
	for _, tc := range []struct {
		name    string
		id      string
		ous     []string
		user    string
		dst     string
		allowed bool
		rule    string
		matched string
	}{
		{"ssh in policy", "alice", []string{"eng"}, "", "10.1.9.9:22/tcp", true, "10.1.0.0/16 tcp/22", "engineering,dns"},
		{"port range edge", "alice", []string{"eng"}, "", "10.1.9.9:8100/tcp", true, "10.1.0.0/16 tcp/8000-8100", "engineering,dns"},
		{"port outside policy", "alice", []string{"eng"}, "", "10.1.9.9:23/tcp", false, "", "engineering,dns"},
		{"udp where only tcp", "alice", []string{"eng"}, "", "10.1.9.9:22/udp", false, "", "engineering,dns"},
		{"icmp to one host", "alice", []string{"eng"}, "", "10.1.2.3/icmp", true, "10.1.2.3/32 icmp", "engineering,dns"},
		{"icmp elsewhere", "alice", []string{"eng"}, "", "10.1.2.4/icmp", false, "", "engineering,dns"},
		{"everyone's dns", "carol", []string{"sales"}, "", "10.0.0.53:53/udp", true, "10.0.0.53/32 udp/53", "dns"},
		{"AND of keys: ou without user", "dave", []string{"ops"}, "dave", "10.9.9.9:1/tcp", false, "", "dns"},
		{"AND of keys: both", "dave", []string{"ops"}, "root-dave", "10.9.9.9:1/tcp", true, "10.0.0.0/8", "dns,ops"},
		{"any traffic to an address", "alice", []string{"eng"}, "", "10.1.9.9", true, "10.1.0.0/16 tcp/22", "engineering,dns"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ParseDestination(tc.dst)
			if err != nil {
				t.Fatal(err)
			}
			e := set.Explain(IdentityFor(tc.id, tc.user, tc.ous, nil, ""), nil, d)
			if e.Allowed != tc.allowed || e.Rule != tc.rule || strings.Join(e.Matched, ",") != tc.matched {
				t.Errorf("allowed %v rule %q matched %v, want %v %q %s\n%s", e.Allowed, e.Rule, e.Matched, tc.allowed, tc.rule, tc.matched, e.Format())
			}
		})
	}
	// The explanation names the failing key.
	e := set.Explain(eng, nil, Destination{Addr: eng0})
	if txt := e.Format(); !strings.Contains(txt, `no  ou ["ops"] against ["eng"]`) || !strings.Contains(txt, `yes ou ["eng"] against ["eng"]`) {
		t.Errorf("explanation does not say which key failed:\n%s", txt)
	}
	// No policy at all: only with a match-nothing set.
	none, _ := Compile(demo[:1])
	e = none.Explain(IdentityFor("carol", "", []string{"sales"}, nil, ""), nil, Destination{Addr: eng0})
	if e.Allowed || !strings.Contains(e.Format(), "no policy matches this identity") {
		t.Errorf("no-policy device:\n%s", e.Format())
	}
}

var eng0 = mustAddr("10.1.0.1")

func TestCasesReport(t *testing.T) {
	set, _ := Compile(demo)
	dir := t.TempDir()
	path := filepath.Join(dir, "cases.toml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`
[[case]]
name = "ssh"
device = "alice"
ou = ["eng"]
dst = "10.1.9.9:22/tcp"
want = "allow"
policies = ["engineering", "dns"]

[[case]]
name = "telnet"
device = "alice"
ou = ["eng"]
dst = "10.1.9.9:23/tcp"
want = "allow"
`)
	cases, err := LoadCases(path)
	if err != nil {
		t.Fatal(err)
	}
	text, failed, _ := Report(set.Run(cases))
	if failed != 1 || !strings.Contains(text, "ok    ssh") || !strings.Contains(text, "FAIL  telnet") ||
		!strings.Contains(text, "- want allow\n      + got  deny") {
		t.Errorf("failed %d:\n%s", failed, text)
	}
	for _, bad := range []struct{ text, want string }{
		{"[[case]]\ndevice = \"a\"\ndst = \"10.0.0.1\"\nwant = \"maybe\"\n", `not "allow" or "deny"`},
		{"[[case]]\ndst = \"10.0.0.1\"\nwant = \"allow\"\n", `exactly one of "cert" or "device"`},
		{"[[case]]\ndevice = \"a\"\ndst = \"10.0.0.1:22\"\nwant = \"allow\"\n", `needs a protocol`},
		{"[[case]]\ndevice = \"a\"\ndst = \"10.0.0.1\"\nwant = \"allow\"\ntypo = 1\n", `typo`},
		{"", "no [[case]]"},
	} {
		write(bad.text)
		if _, err := LoadCases(path); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%q: %v, want %q", bad.text, err, bad.want)
		}
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestBareAddressFromFilter: the verdict for a bare address is the packet
// filter's (Grant.AllowsSome), for every protocol class and on both lookup
// structures (linear scan and per-length maps), not a second evaluator.
func TestBareAddressFromFilter(t *testing.T) {
	ps := []Policy{{Name: "p", Match: Match{CN: []string{"*"}}, Allow: []string{
		"10.1.0.0/16 tcp/22", "10.2.0.5 udp/53", "10.3.0.0/24 icmp", "10.4.0.0/16", "fd00:1::/64 tcp/443", "fd00:2::7 icmp",
	}}}
	for _, lm := range []int{16, 0} {
		old := linearMax
		linearMax = lm
		set, err := Compile(ps)
		linearMax = old
		if err != nil {
			t.Fatal(err)
		}
		g := set.Lookup(IdentityFor("x", "", nil, nil, ""))
		for _, tc := range []struct {
			addr string
			want bool
		}{
			{"10.1.200.1", true},       // a TCP port
			{"10.2.0.5", true},         // a UDP port
			{"10.2.0.6", false},        // next to it
			{"10.3.0.255", true},       // ICMP only
			{"10.4.9.9", true},         // any protocol
			{"10.5.0.1", false},        // nothing
			{"fd00:1::99", true},       // v6 TCP
			{"fd00:2::7", true},        // v6 ICMP
			{"fd00:2::8", false},       // v6 nothing
			{"::ffff:10.4.0.1", false}, // not unmapped here: the filter's own answer for a v6 address
		} {
			a := mustAddr(tc.addr)
			if got := g.AllowsSome(a); got != tc.want {
				t.Errorf("linearMax %d: AllowsSome(%s) = %v, want %v", lm, a, got, tc.want)
			}
			if e := set.Explain(IdentityFor("x", "", nil, nil, ""), nil, Destination{Addr: a}); e.Allowed != g.AllowsSome(a) || e.Filtered != e.Allowed {
				t.Errorf("linearMax %d: explain %s says %v, the filter %v", lm, a, e.Allowed, g.AllowsSome(a))
			}
		}
	}
}

// TestExplainGates: a gate that refuses (allowlist, CRL) makes the verdict
// deny even where the filter allows, on its own line; gates see the
// certificates.
func TestExplainGates(t *testing.T) {
	set, _ := Compile(demo)
	seen := 0
	refuse := func(id pki.Identity, certs []*x509.Certificate) GateResult {
		seen += len(certs)
		return GateResult{Name: "allowlist", OK: id.Device != "mallory", Line: "refused for " + id.Device}
	}
	pass := func(pki.Identity, []*x509.Certificate) GateResult {
		return GateResult{Name: "revocation", OK: true, Line: "not revoked"}
	}
	dst, _ := ParseDestination("10.0.0.53:53/udp")
	e := set.Explain(IdentityFor("mallory", "", nil, nil, ""), []*x509.Certificate{{}}, dst, refuse, pass)
	if e.Allowed || !e.Filtered || seen != 1 {
		t.Fatalf("allowed %v filtered %v certs seen %d", e.Allowed, e.Filtered, seen)
	}
	if f := e.Format(); !strings.Contains(f, "allowlist: refused for mallory\nrevocation: not revoked\nverdict: deny") {
		t.Fatalf("format:\n%s", f)
	}
	if e := set.Explain(IdentityFor("alice", "", nil, nil, ""), nil, dst, refuse, pass); !e.Allowed {
		t.Fatalf("alice refused:\n%s", e.Format())
	}
	text, failed, errs := Report(set.Run([]Case{{Name: "m", Device: "mallory", Dst: "10.0.0.53:53/udp", Want: "allow"}}, refuse))
	if failed != 1 || errs != 0 || !strings.Contains(text, "because allowlist: refused for mallory") {
		t.Fatalf("report (%d failed, %d errors):\n%s", failed, errs, text)
	}
	_, failed, errs = Report(set.Run([]Case{{Name: "c", Cert: filepath.Join(t.TempDir(), "none.crt"), Dst: "10.0.0.53:53/udp", Want: "allow"}}))
	if failed != 1 || errs != 1 {
		t.Fatalf("unreadable certificate: %d failed, %d errors; want an error", failed, errs)
	}
}
