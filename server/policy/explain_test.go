package policy

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
			e := set.Explain(IdentityFor(tc.id, tc.user, tc.ous, nil, ""), d)
			if e.Allowed != tc.allowed || e.Rule != tc.rule || strings.Join(e.Matched, ",") != tc.matched {
				t.Errorf("allowed %v rule %q matched %v, want %v %q %s\n%s", e.Allowed, e.Rule, e.Matched, tc.allowed, tc.rule, tc.matched, e.Format())
			}
		})
	}
	// The explanation names the failing key.
	e := set.Explain(eng, Destination{Addr: eng0})
	if txt := e.Format(); !strings.Contains(txt, `no  ou ["ops"] against ["eng"]`) || !strings.Contains(txt, `yes ou ["eng"] against ["eng"]`) {
		t.Errorf("explanation does not say which key failed:\n%s", txt)
	}
	// No policy at all: only with a match-nothing set.
	none, _ := Compile(demo[:1])
	e = none.Explain(IdentityFor("carol", "", []string{"sales"}, nil, ""), Destination{Addr: eng0})
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
	text, failed := Report(set.Run(cases))
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
