package client

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/client/policyroute"
	"github.com/sallyport/sallyport/tunnel"
)

// fakeKernel is the recorder's memory of the routing table, rules and kill
// switch tables, so read-back (status) and adoption run without root.
type fakeKernel struct {
	routes []policyroute.TableRoute
	rules  []policyroute.Rule
	kill   map[string]killSpec
}

func (r *recorder) ReplaceTableRoute(rt policyroute.TableRoute) error {
	r.mu.Lock()
	// As the kernel: one route per destination and metric in a table.
	r.k.routes = slices.DeleteFunc(r.k.routes, func(x policyroute.TableRoute) bool {
		return x.Table == rt.Table && x.Dst == rt.Dst && x.Metric == rt.Metric
	})
	r.k.routes = append(r.k.routes, rt)
	r.mu.Unlock()
	return r.note("route+ %s", rt)
}

func (r *recorder) DeleteTableRoute(rt policyroute.TableRoute) error {
	r.mu.Lock()
	r.k.routes = slices.DeleteFunc(r.k.routes, func(x policyroute.TableRoute) bool { return x == rt })
	r.mu.Unlock()
	return r.note("route- %s", rt)
}

func (r *recorder) TableRoutes(table int) ([]policyroute.TableRoute, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []policyroute.TableRoute
	for _, x := range r.k.routes {
		if x.Table == table {
			out = append(out, x)
		}
	}
	return out, nil
}

func (r *recorder) AddRule(rl policyroute.Rule) error {
	r.mu.Lock()
	if !slices.Contains(r.k.rules, rl) {
		r.k.rules = append(r.k.rules, rl)
	}
	r.mu.Unlock()
	return r.note("rule+ %s", rl)
}

func (r *recorder) DeleteRule(rl policyroute.Rule) error {
	r.mu.Lock()
	r.k.rules = slices.DeleteFunc(r.k.rules, func(x policyroute.Rule) bool { return x == rl })
	r.mu.Unlock()
	return r.note("rule- %s", rl)
}

func (r *recorder) Rules(table int) ([]policyroute.Rule, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []policyroute.Rule
	for _, x := range r.k.rules {
		if x.Table == table {
			out = append(out, x)
		}
	}
	return out, nil
}

func (r *recorder) RemoveAddress(dev string, p netip.Prefix) error { return r.note("addr- %s", p) }

func (r *recorder) ConnectedPrefixes(except string) ([]netip.Prefix, error) {
	return []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}, nil
}

func (r *recorder) InstallKillSwitch(s killSpec) error {
	r.mu.Lock()
	if r.k.kill == nil {
		r.k.kill = map[string]killSpec{}
	}
	r.k.kill[s.Table] = s
	r.mu.Unlock()
	return r.note("kill+ %s lan=%v", s.Table, s.LAN)
}

func (r *recorder) RemoveKillSwitch(table string) error {
	r.mu.Lock()
	delete(r.k.kill, table)
	r.mu.Unlock()
	return r.note("kill- %s", table)
}

func (r *recorder) KillSwitchExists(table string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.k.kill[table]
	return ok, nil
}

// linkGone is the kernel's part of a TUN going away (its client was
// killed): every route through it goes with it.
func (r *recorder) linkGone(dev string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.k.routes = slices.DeleteFunc(r.k.routes, func(x policyroute.TableRoute) bool { return !x.Unreachable && x.Dev == dev })
}

// kernel returns a copy of the fake kernel state.
func (r *recorder) kernel() fakeKernel {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := fakeKernel{routes: slices.Clone(r.k.routes), rules: slices.Clone(r.k.rules), kill: map[string]killSpec{}}
	for n, s := range r.k.kill {
		k.kill[n] = s
	}
	return k
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func strs[T fmt.Stringer](xs []T) []string {
	out := []string{}
	for _, x := range xs {
		out = append(out, x.String())
	}
	return out
}

// The plan for a pushed config: which routes go into the table, which
// rules lead there. The attacker's angles: a hostile more specific route in
// main must lose to every pushed prefix (the specific rule, ahead of main,
// has no suppress for non-default routes); a full tunnel without IPv6 must
// not let IPv6 out; the client's own connection must skip the table (the
// mark) even when a pushed prefix covers the gateway.
func TestPlanRoutes(t *testing.T) {
	const T = 1000
	specific4 := "v4 32700: not fwmark 0x3e8 lookup 1000 suppress_prefixlength 0"
	main4 := "v4 32701: from all lookup main suppress_prefixlength 0"
	default4 := "v4 32702: not fwmark 0x3e8 lookup 1000"
	specific6, main6, default6 := "v6"+specific4[2:], "v6"+main4[2:], "v6"+default4[2:]
	const fb = " metric 21328" // the fallback behind each route through the TUN
	tests := []struct {
		name   string
		pushed []netip.Prefix
		has6   bool
		routes []string
		rules  []string
	}{
		{"split v4", pfx("10.1.0.0/16", "10.1.2.3/16", "198.18.0.0/15"), false,
			[]string{"10.1.0.0/16 dev sp0 table 1000", "unreachable 10.1.0.0/16 table 1000" + fb,
				"198.18.0.0/15 dev sp0 table 1000", "unreachable 198.18.0.0/15 table 1000" + fb}, []string{specific4}},
		{"full v4 only: v6 unreachable", pfx("0.0.0.0/0"), false,
			[]string{"0.0.0.0/0 dev sp0 table 1000", "unreachable 0.0.0.0/0 table 1000" + fb, "unreachable ::/0 table 1000" + fb},
			[]string{specific4, main4, default4, specific6, main6, default6}},
		{"full dual stack", pfx("0.0.0.0/0", "::/0", "10.1.0.0/16"), true,
			[]string{"0.0.0.0/0 dev sp0 table 1000", "unreachable 0.0.0.0/0 table 1000" + fb, "::/0 dev sp0 table 1000",
				"unreachable ::/0 table 1000" + fb, "10.1.0.0/16 dev sp0 table 1000", "unreachable 10.1.0.0/16 table 1000" + fb},
			[]string{specific4, main4, default4, specific6, main6, default6}},
		{"v6 prefix without v6 address", pfx("10.1.0.0/16", "2001:db8::/32"), false,
			[]string{"10.1.0.0/16 dev sp0 table 1000", "unreachable 10.1.0.0/16 table 1000" + fb, "unreachable 2001:db8::/32 table 1000" + fb},
			[]string{specific4, specific6}},
		{"v6 only full", pfx("::/0"), true, []string{"::/0 dev sp0 table 1000", "unreachable ::/0 table 1000" + fb}, []string{specific6, main6, default6}},
		{"def1 v4 only: v6 unreachable", pfx("0.0.0.0/1", "128.0.0.0/1"), false,
			[]string{"0.0.0.0/1 dev sp0 table 1000", "unreachable 0.0.0.0/1 table 1000" + fb, "128.0.0.0/1 dev sp0 table 1000",
				"unreachable 128.0.0.0/1 table 1000" + fb, "unreachable ::/0 table 1000" + fb},
			[]string{specific4, specific6, main6, default6}},
		{"half of v4 is not full", pfx("0.0.0.0/1"), false, []string{"0.0.0.0/1 dev sp0 table 1000", "unreachable 0.0.0.0/1 table 1000" + fb},
			[]string{specific4}},
		{"nothing", nil, false, []string{}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := planRoutes(tt.pushed, "sp0", T, tt.has6)
			if got := strs(p.routes); !slices.Equal(got, tt.routes) {
				t.Errorf("routes\n got %q\nwant %q", got, tt.routes)
			}
			if got := strs(p.rules); !slices.Equal(got, tt.rules) {
				t.Errorf("rules\n got %q\nwant %q", got, tt.rules)
			}
			for _, r := range p.rules {
				if !ours(r, T) {
					t.Errorf("rule %s not recognised as ours", r)
				}
				if r.Table == T && r.NotMark != T {
					t.Errorf("rule %s into the table does not exempt the marked socket", r)
				}
				if r.Priority >= 32766 {
					t.Errorf("rule %s not ahead of main", r)
				}
			}
		})
	}
	if ours(policyroute.Rule{Priority: prioSpecific, Table: 2000, NotMark: 2000}, T) || ours(policyroute.Rule{Priority: 100, Table: T, NotMark: T}, T) {
		t.Error("someone else's rule taken for ours")
	}
}

// Any set of pushed prefixes whose union is a family's whole space is a
// full tunnel, however it is cut; a set with a gap anywhere, even of one
// address at either end, is not.
func TestCoversAll(t *testing.T) {
	tests := []struct {
		name   string
		routes []netip.Prefix
		v4, v6 bool
	}{
		{"nothing", nil, false, false},
		{"default v4", pfx("0.0.0.0/0"), true, false},
		{"default v6", pfx("::/0"), false, true},
		{"def1", pfx("0.0.0.0/1", "128.0.0.0/1"), true, false},
		{"def1 v6", pfx("::/1", "8000::/1"), false, true},
		{"def1 reversed, duplicated, with extras", pfx("128.0.0.0/1", "10.0.0.0/8", "0.0.0.0/1", "128.0.0.0/1", "2001:db8::/32"), true, false},
		{"four /2", pfx("192.0.0.0/2", "0.0.0.0/2", "128.0.0.0/2", "64.0.0.0/2"), true, false},
		{"uneven cuts", pfx("0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3", "224.0.0.0/3"), true, false},
		{"overlapping", pfx("0.0.0.0/1", "64.0.0.0/2", "100.0.0.0/7", "128.0.0.0/1"), true, false},
		{"unmasked prefixes", pfx("1.2.3.4/1", "200.1.1.1/1"), true, false},
		{"half", pfx("0.0.0.0/1"), false, false},
		{"gap in the middle", pfx("0.0.0.0/2", "128.0.0.0/1"), false, false},
		{"last address missing", pfx("0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3", "224.0.0.0/4", "240.0.0.0/5",
			"248.0.0.0/6", "252.0.0.0/7", "254.0.0.0/8", "255.0.0.0/9", "255.128.0.0/10", "255.192.0.0/11", "255.224.0.0/12",
			"255.240.0.0/13", "255.248.0.0/14", "255.252.0.0/15", "255.254.0.0/16", "255.255.0.0/17", "255.255.128.0/18",
			"255.255.192.0/19", "255.255.224.0/20", "255.255.240.0/21", "255.255.248.0/22", "255.255.252.0/23",
			"255.255.254.0/24", "255.255.255.0/25", "255.255.255.128/26", "255.255.255.192/27", "255.255.255.224/28",
			"255.255.255.240/29", "255.255.255.248/30", "255.255.255.252/31", "255.255.255.254/32"), false, false},
		{"first address missing", pfx("0.0.0.1/32", "0.0.0.2/31", "0.0.0.4/30", "0.0.0.8/29", "0.0.0.16/28", "0.0.0.32/27",
			"0.0.0.64/26", "0.0.0.128/25", "0.0.1.0/24", "0.0.2.0/23", "0.0.4.0/22", "0.0.8.0/21", "0.0.16.0/20", "0.0.32.0/19",
			"0.0.64.0/18", "0.0.128.0/17", "0.1.0.0/16", "0.2.0.0/15", "0.4.0.0/14", "0.8.0.0/13", "0.16.0.0/12", "0.32.0.0/11",
			"0.64.0.0/10", "0.128.0.0/9", "1.0.0.0/8", "2.0.0.0/7", "4.0.0.0/6", "8.0.0.0/5", "16.0.0.0/4", "32.0.0.0/3",
			"64.0.0.0/2", "128.0.0.0/1"), false, false},
		{"both families, one whole", pfx("0.0.0.0/1", "128.0.0.0/1", "::/1"), true, false},
		{"v4-mapped v6 is not v4", pfx("::ffff:0.0.0.0/96"), false, false},
		{"invalid ignored", []netip.Prefix{{}, netip.MustParsePrefix("0.0.0.0/0")}, true, false},
	}
	for _, tt := range tests {
		if got := coversAll(tt.routes, false); got != tt.v4 {
			t.Errorf("%s: coversAll(v4) = %v, want %v", tt.name, got, tt.v4)
		}
		if got := coversAll(tt.routes, true); got != tt.v6 {
			t.Errorf("%s: coversAll(v6) = %v, want %v", tt.name, got, tt.v6)
		}
		if got := fullTunnel(tt.routes); got != (tt.v4 || tt.v6) {
			t.Errorf("%s: fullTunnel = %v", tt.name, got)
		}
	}
	// The last address plus the rest is whole again.
	if !coversAll(pfx("0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3", "224.0.0.0/3", "255.255.255.255/32"), false) {
		t.Error("a redundant /32 at the top breaks coverage")
	}
}

func TestWantKillSwitch(t *testing.T) {
	on, off := new(bool), new(bool)
	*on = true
	tests := []struct {
		local, pushed *bool
		full, want    bool
	}{
		{nil, nil, false, false},
		{nil, nil, true, true},
		{on, nil, false, true},
		{off, nil, true, false},
		{nil, off, true, false},
		{off, on, false, true}, // the gateway's policy wins over the laptop's off
		{on, off, true, true},  // and the employee's on over the gateway's off
		{off, off, true, false},
	}
	for _, tt := range tests {
		if got := wantKillSwitch(tt.local, tt.pushed, tt.full); got != tt.want {
			t.Errorf("wantKillSwitch(%v, %v, full=%v) = %v, want %v", tt.local, tt.pushed, tt.full, got, tt.want)
		}
	}
}

// What the laptop does before its first connection: a crashed client's
// kill switch is adopted whatever the file says; otherwise the remembered
// config counts as pushed again, so either side can switch it on, as
// while connected (the pushed kill_switch, else a full tunnel unless the
// file says false); a memory that cannot be read fails closed; a laptop
// that never connected has the file's word.
func TestKillAtStart(t *testing.T) {
	on, off := new(bool), new(bool)
	*on = true
	split, full := &memory{Routes: pfx("10.1.0.0/16")}, &memory{Routes: pfx("0.0.0.0/1", "128.0.0.0/1")}
	pushedOn, pushedOff := &memory{Routes: pfx("10.1.0.0/16"), KillSwitch: on}, &memory{Routes: pfx("0.0.0.0/0"), KillSwitch: off}
	bad := errors.New("corrupt")
	for _, tt := range []struct {
		name   string
		local  *bool
		exists bool
		b      boot
		want   bool
	}{
		{"never connected", nil, false, boot{}, false},
		{"crashed client's table", nil, true, boot{}, true},
		{"crashed client's table, file says off", off, true, boot{}, true},
		{"file says on", on, false, boot{}, true},
		{"remembered push on", nil, false, boot{mem: pushedOn}, true},
		{"remembered full tunnel", nil, false, boot{mem: full}, true},
		{"remembered split tunnel", nil, false, boot{mem: split}, false},
		{"remembered full tunnel, pushed off", nil, false, boot{mem: pushedOff}, false},
		{"remembered push on over the file's off", off, false, boot{mem: pushedOn}, true},
		{"file says off, remembered full tunnel", off, false, boot{mem: full}, false},
		{"file says on, remembered push off", on, false, boot{mem: pushedOff}, true},
		{"never connected, file says off", off, false, boot{}, false},
		{"file says on over the remembered split", on, false, boot{mem: split}, true},
		{"memory unreadable", nil, false, boot{err: bad}, true},
		{"memory unreadable, file says off", off, false, boot{err: bad}, true},
	} {
		if got := killAtStart(tt.local, tt.exists, tt.b); got != tt.want {
			t.Errorf("%s: killAtStart = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestKillSpec(t *testing.T) {
	s := newKillSpec("sp0", 7, []string{"198.18.0.2:8443", "[2001:db8::1]:443", "gw.example:443", "198.18.0.2:8443", "bad"}, pfx("192.168.1.0/24"))
	want := []gatewayEndpoint{{netip.MustParseAddr("198.18.0.2"), 8443}, {netip.MustParseAddr("2001:db8::1"), 443}, {netip.Addr{}, 443}}
	if s.Table != "sallyport-sp0" || s.Dev != "sp0" || s.Mark != 7 || !slices.Equal(s.Gateways, want) || !s.DNS || len(s.LAN) != 1 {
		t.Fatalf("spec %+v", s)
	}
	if s := newKillSpec("sp0", 7, []string{"198.18.0.2:8443"}, nil); s.DNS {
		t.Fatal("marked DNS allowed although every gateway is an address")
	}
}

// netState reconciles table routes and rules across pushed configs,
// survives a DNS failure with a warning, and teardown leaves the kernel as
// it found it: someone else's rule stays.
func TestNetStateApply(t *testing.T) {
	r := &recorder{}
	foreign := policyroute.Rule{Priority: 100, Table: 77, SuppressPrefixlen: -1}
	r.k.rules = []policyroute.Rule{foreign}
	logs := &syncBuffer{}
	n := &netState{sys: r, dev: "fake0", log: testLogger(logs), table: DefaultTable, servers: []string{"127.0.0.1:443"}}
	if err := n.start(boot{}); err != nil {
		t.Fatal(err)
	}
	pc := testConfig()
	if err := n.apply(pc); err != nil {
		t.Fatal(err)
	}
	// The route covering the gateway is installed: the marked socket skips
	// the table.
	for _, want := range []string{"route+ 10.1.0.0/16 dev fake0 table 21328", "route+ 127.0.0.0/8 dev fake0 table 21328"} {
		if !hasLine(r.log(), want) {
			t.Fatalf("missing %q in %q", want, r.log())
		}
	}
	pc.Routes = pfx("10.2.0.0/16", "10.2.0.0/16")
	r.dnsErr = errors.New("no resolved")
	if err := n.apply(pc); err != nil {
		t.Fatal(err)
	}
	calls := r.log()
	if !hasLine(calls, "route- 10.1.0.0/16 dev fake0 table 21328") || !hasLine(calls, "route+ 10.2.0.0/16 dev fake0 table 21328") || len(n.routes) != 2 {
		t.Fatalf("routes not reconciled: %q, now %v", calls, n.routes)
	}
	if k := r.kernel(); len(k.routes) != 2 || len(k.rules) != 2 || len(k.kill) != 0 {
		t.Fatalf("kernel after split tunnel: %+v", k)
	}
	mustContain(t, logs.String(), "pushed DNS not applied")
	// Full tunnel: the kill switch comes on by default.
	pc.Routes = pfx("0.0.0.0/0")
	if err := n.apply(pc); err != nil {
		t.Fatal(err)
	}
	in, err := installed(r, "fake0", DefaultTable)
	if err != nil || !in.KillSwitch || len(in.Rules) != 6 || !slices.Contains(in.Routes, "unreachable ::/0 table 21328 metric 21328") {
		t.Fatalf("installed after full tunnel: %+v %v", in, err)
	}
	// Back to split: the default rules go, and so does the kill switch.
	pc.Routes = pfx("10.2.0.0/16")
	if err := n.apply(pc); err != nil {
		t.Fatal(err)
	}
	if in, _ := installed(r, "fake0", DefaultTable); in.KillSwitch || len(in.Rules) != 1 || len(in.Routes) != 2 {
		t.Fatalf("installed after back to split: %+v", in)
	}
	n.teardown()
	if k := r.kernel(); len(k.routes) != 0 || !slices.Equal(k.rules, []policyroute.Rule{foreign}) || len(k.kill) != 0 || n.routes != nil {
		t.Fatalf("teardown left %+v (or removed someone else's rule)", k)
	}
}

// A client that finds a crashed client's kill switch adopts it (replaced
// atomically, never removed first), and keeps its rules and routes until
// its own config replaces them; a clean exit then removes the kill switch
// and them too, and nobody else's.
func TestNetStateAdopt(t *testing.T) {
	r := &recorder{}
	stale := planRoutes(pfx("0.0.0.0/0"), "sp0", DefaultTable, false)
	foreign := policyroute.Rule{Priority: prioSpecific, Table: 4242, NotMark: 4242}
	r.k.rules = append(slices.Clone(stale.rules), foreign)
	r.k.routes = stale.routes
	r.linkGone("sp0")
	r.k.kill = map[string]killSpec{"sallyport-sp0": {Table: "sallyport-sp0"}, "sallyport-sp1": {Table: "sallyport-sp1"}}
	logs := &syncBuffer{}
	n := &netState{sys: r, dev: "sp0", log: testLogger(logs), table: DefaultTable, servers: []string{"198.18.0.2:8443"}, allowLAN: true}
	if err := n.start(boot{}); err != nil {
		t.Fatal(err)
	}
	k := r.kernel()
	if len(k.routes) != 2 || len(k.rules) != 7 || len(n.routes) != 2 || len(n.rules) != 6 {
		t.Fatalf("the crashed client's routing not kept and adopted: kernel %+v, adopted %v %v", k, n.routes, n.rules)
	}
	for _, c := range r.log() {
		if strings.HasPrefix(c, "route-") || strings.HasPrefix(c, "rule-") {
			t.Fatalf("start removed routing before any config: %q", r.log())
		}
	}
	mustContain(t, logs.String(), "kept the routes and rules an earlier client left")
	if s, ok := k.kill["sallyport-sp0"]; !ok || s.Dev != "sp0" || len(s.Gateways) != 1 || !slices.Contains(s.LAN, netip.MustParsePrefix("192.168.1.0/24")) {
		t.Fatalf("kill switch not adopted: %+v", k.kill)
	}
	for _, c := range r.log() {
		if strings.HasPrefix(c, "kill-") {
			t.Fatalf("kill switch removed while adopting: %q", r.log())
		}
	}
	mustContain(t, logs.String(), "kill switch adopted")
	n.teardown()
	if k := r.kernel(); len(k.kill) != 1 || k.kill["sallyport-sp1"].Table == "" {
		t.Fatalf("teardown: kill switches %+v, want only sp1's", k.kill)
	}
	if k := r.kernel(); len(k.routes) != 0 || !slices.Equal(k.rules, []policyroute.Rule{foreign}) {
		t.Fatalf("teardown left the adopted routing (or removed someone else's): %+v", k)
	}
	// Without a leftover and without kill_switch in the file, start leaves
	// the kill switch to the pushed config.
	r2 := &recorder{}
	n2 := &netState{sys: r2, dev: "sp0", log: testLogger(logs), table: DefaultTable}
	if err := n2.start(boot{}); err != nil || len(r2.log()) != 0 {
		t.Fatalf("start changed something: %q %v", r2.log(), err)
	}
}

// Split tunnel, no kill switch: when the client dies (its TUN goes, and
// with it every route through it) each pushed prefix, IPv4 and IPv6, is
// still refused by the table; a new client keeps that state until its own
// config is in place, adding the new routes before it drops the stale
// ones; its teardown (`down`) removes all of it.
func TestNetStateCrashFailsClosed(t *testing.T) {
	r := &recorder{}
	logs := &syncBuffer{}
	n := &netState{sys: r, dev: "sp0", log: testLogger(logs), table: DefaultTable}
	if err := n.start(boot{}); err != nil {
		t.Fatal(err)
	}
	pc := testConfig()
	pc.Address6 = netip.MustParsePrefix("fd00:8::2/64")
	pc.Routes = pfx("10.1.0.0/16", "2001:db8:77::/48")
	if err := n.apply(pc); err != nil {
		t.Fatal(err)
	}
	r.linkGone("sp0") // kill -9
	k := r.kernel()
	for _, p := range pc.Routes {
		if !slices.ContainsFunc(k.routes, func(x policyroute.TableRoute) bool { return x.Dst == p && x.Unreachable }) {
			t.Errorf("after the TUN went, %s is not refused: %v", p, strs(k.routes))
		}
	}
	if len(k.rules) != 2 {
		t.Errorf("after the TUN went, the rules into the table are %v", k.rules)
	}
	// The next up: nothing goes before its config is in place.
	n2 := &netState{sys: r, dev: "sp0", log: testLogger(logs), table: DefaultTable}
	if err := n2.start(boot{}); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.calls = nil
	r.mu.Unlock()
	pc.Routes = pfx("10.2.0.0/16", "2001:db8:77::/48")
	if err := n2.apply(pc); err != nil {
		t.Fatal(err)
	}
	calls := r.log()
	added := slices.Index(calls, "route+ 10.2.0.0/16 dev sp0 table 21328")
	dropped := slices.Index(calls, "route- unreachable 10.1.0.0/16 table 21328 metric 21328")
	if added < 0 || dropped < added || slices.Contains(calls, "route- unreachable 2001:db8:77::/48 table 21328 metric 21328") {
		t.Fatalf("the adopted routes were not reconciled (new first, stale after, kept ones kept): %q", calls)
	}
	if in, _ := installed(r, "sp0", DefaultTable); len(in.Routes) != 4 || len(in.Rules) != 2 {
		t.Fatalf("after the new config: %+v", in)
	}
	n2.teardown()
	if k := r.kernel(); len(k.routes) != 0 || len(k.rules) != 0 {
		t.Fatalf("down left %+v", k)
	}
}

// A profile without a device crashed on sp1 (another profile had sp0),
// with a pushed kill switch and a full tunnel; the next up gets sp0. What
// sp1's run left would refuse the new tunnel's own traffic (its kill
// switch lets out only what leaves through sp1; its table's rules do not
// skip sp0's mark, so its unreachable 0.0.0.0/0 would take even the
// connection to the gateway). start takes it over: the kill switch comes
// on for sp0 before sp1's goes, the prefixes sp1's table refused are
// refused in sp0's, and sp1's rules, routes and kill switch are gone.
func TestNetStateTakesOverPreviousDevice(t *testing.T) {
	r := &recorder{}
	logs := &syncBuffer{}
	on := true
	old := &netState{sys: r, dev: "sp1", log: testLogger(logs), table: DefaultTable + 1}
	if err := old.start(boot{}); err != nil {
		t.Fatal(err)
	}
	pc := testConfig()
	pc.KillSwitch = &on
	pc.Routes = pfx("0.0.0.0/0", "10.1.0.0/16")
	if err := old.apply(pc); err != nil {
		t.Fatal(err)
	}
	r.linkGone("sp1") // kill -9
	n := &netState{sys: r, dev: "sp0", log: testLogger(logs), table: DefaultTable, prev: "sp1", prevTable: DefaultTable + 1}
	r.mu.Lock()
	r.calls = nil
	r.mu.Unlock()
	if err := n.start(boot{}); err != nil {
		t.Fatal(err)
	}
	calls := r.log()
	if on, off := slices.Index(calls, "kill+ sallyport-sp0 lan=[]"), slices.Index(calls, "kill- sallyport-sp1"); on < 0 || off < on {
		t.Fatalf("the kill switch was not handed over without a gap: %q", calls)
	}
	k := r.kernel()
	if _, ok := k.kill["sallyport-sp1"]; ok || len(k.kill) != 1 {
		t.Fatalf("kill switches after up: %v", k.kill)
	}
	if old, _ := installed(r, "sp1", DefaultTable+1); len(old.Routes) != 0 ||
		slices.ContainsFunc(old.Rules, func(s string) bool { return strings.Contains(s, "lookup 21329") }) {
		t.Fatalf("sp1's table and rules are still there: %+v", old)
	}
	in, _ := installed(r, "sp0", DefaultTable)
	want := []string{"unreachable 0.0.0.0/0 table 21328 metric 21328", "unreachable 10.1.0.0/16 table 21328 metric 21328",
		"unreachable ::/0 table 21328 metric 21328"}
	got := slices.Sorted(slices.Values(in.Routes))
	if !in.KillSwitch || !slices.Equal(got, want) || len(in.Rules) != 6 {
		t.Fatalf("sp0 after taking over: %+v, want routes %v", in, want)
	}
	mustContain(t, logs.String(), "took over what a crashed run of this profile left")
	n.teardown()
	if k := r.kernel(); len(k.routes)+len(k.rules)+len(k.kill) != 0 {
		t.Fatalf("down left %+v", k)
	}
}

// Full tunnel through the whole client: status reads the table, rules and
// kill switch back from the kernel; they stay in place while the client
// reconnects; shutdown removes them all.
func TestSessionFullTunnel(t *testing.T) {
	noLeaks(t)
	e := startClient(t, envOpt{})
	pc := testConfig()
	pc.Routes = pfx("0.0.0.0/0")
	s, _ := e.up(pc)
	st := e.status("connected", func(st Status) bool { return st.Connected })
	in := st.Installed
	if !in.KillSwitch || in.Table != DefaultTable || len(in.Rules) != 6 ||
		!slices.Equal(in.Routes, []string{"0.0.0.0/0 dev fake0 table 21328", "unreachable 0.0.0.0/0 table 21328 metric 21328",
			"unreachable ::/0 table 21328 metric 21328"}) {
		t.Fatalf("installed %+v (%s)", in, st.InstallErr)
	}
	// Someone deletes a route behind the client's back: status says so.
	_ = e.sys.DeleteTableRoute(policyroute.TableRoute{Dst: pfx("::/0")[0], Table: DefaultTable, Unreachable: true, Metric: fallbackMetric})
	if in := e.c.Status().Installed; len(in.Routes) != 2 {
		t.Fatalf("status shows what the client remembers, not what is installed: %+v", in)
	}
	s.tls.Close()
	e.status("reconnecting", func(st Status) bool { return !st.Connected })
	if in := e.c.Status().Installed; !in.KillSwitch || len(in.Rules) != 6 {
		t.Fatalf("rules or kill switch gone while reconnecting: %+v", in)
	}
	e.up(pc)
	e.status("connected again", func(st Status) bool { return st.Connected })
	e.stop()
	if k := e.sys.kernel(); len(k.routes) != 0 || len(k.rules) != 0 || len(k.kill) != 0 {
		t.Fatalf("shutdown left %+v", k)
	}
}

// A dual-stack gateway pushes an IPv6 address: it goes on the TUN beside
// the IPv4 one, ::/0 is routed into the tunnel (not made unreachable), and
// IPv6 packets from the laptop reach the gateway. Both send paths.
func TestSessionDualStack(t *testing.T) {
	for _, vnet := range []bool{false, true} {
		t.Run(fmt.Sprintf("vnet=%v", vnet), func(t *testing.T) {
			noLeaks(t)
			e := startClient(t, envOpt{vnet: vnet})
			pc := testConfig()
			pc.Address6 = netip.MustParsePrefix("fd00:8::2/64")
			pc.Routes = pfx("0.0.0.0/0", "::/0")
			s, _ := e.up(pc)
			st := e.status("connected", func(st Status) bool { return st.Connected })
			if st.Address6 != "fd00:8::2/64" {
				t.Fatalf("status address6 %q", st.Address6)
			}
			calls := e.sys.log()
			for _, want := range []string{"addr 10.8.0.2/24", "addr fd00:8::2/64", "route+ ::/0 dev fake0 table 21328"} {
				if !hasLine(calls, want) {
					t.Fatalf("missing %q in %q", want, calls)
				}
			}
			v6 := make([]byte, 40)
			v6[0], v6[6], v6[7] = 0x60, 59, 64 // no next header
			e.tun.send(t, v6, tunnel.VnetHdr{})
			if typ, p := s.next(t); typ != tunnel.FrameData || !slices.Equal(p, v6) {
				t.Fatalf("gateway got %s % x, want the IPv6 packet", tunnel.FrameName(typ), p)
			}
		})
	}
}

// The gateway's word on the kill switch: a split tunnel pushed with
// kill_switch = true gets it; a later push without it drops it again; a
// full tunnel pushed with false has none; a full tunnel cut in two /1s has
// it by default.
func TestNetStatePushedKillSwitch(t *testing.T) {
	r := &recorder{}
	n := &netState{sys: r, dev: "sp0", log: testLogger(&syncBuffer{}), table: DefaultTable}
	on, off := true, false
	pc := testConfig()
	pc.KillSwitch = &on
	if err := n.apply(pc); err != nil {
		t.Fatal(err)
	}
	if k := r.kernel(); len(k.kill) != 1 {
		t.Fatalf("pushed kill_switch = true on a split tunnel: %+v", k.kill)
	}
	pc.KillSwitch = nil
	if err := n.apply(pc); err != nil {
		t.Fatal(err)
	}
	if k := r.kernel(); len(k.kill) != 0 {
		t.Fatalf("kill switch stayed after the push dropped it: %+v", k.kill)
	}
	pc.Routes, pc.KillSwitch = pfx("0.0.0.0/0"), &off
	if err := n.apply(pc); err != nil {
		t.Fatal(err)
	}
	if k := r.kernel(); len(k.kill) != 0 {
		t.Fatalf("pushed kill_switch = false on a full tunnel: %+v", k.kill)
	}
	// OpenVPN's def1 is a full tunnel too: the kill switch comes on without
	// a word from either side, and IPv6 is unreachable.
	pc.Routes, pc.KillSwitch = pfx("0.0.0.0/1", "128.0.0.0/1"), nil
	if err := n.apply(pc); err != nil {
		t.Fatal(err)
	}
	if in, _ := installed(r, "sp0", DefaultTable); !in.KillSwitch || !slices.Contains(in.Routes, "unreachable ::/0 table 21328 metric 21328") {
		t.Fatalf("def1 push: %+v", in)
	}
}

// A dual-stack session followed by a v4-only one: the old IPv6 address
// leaves the TUN (and ::/0 becomes unreachable instead of routed).
func TestNetStateDropsStaleV6(t *testing.T) {
	r := &recorder{}
	n := &netState{sys: r, dev: "sp0", log: testLogger(&syncBuffer{}), table: DefaultTable}
	pc := testConfig()
	pc.Address6 = netip.MustParsePrefix("fd00:8::2/64")
	pc.Routes = pfx("0.0.0.0/0", "::/0")
	if err := n.apply(pc); err != nil {
		t.Fatal(err)
	}
	pc.Address6 = netip.Prefix{}
	if err := n.apply(pc); err != nil {
		t.Fatal(err)
	}
	if !hasLine(r.log(), "addr- fd00:8::2/64") || hasLine(r.log(), "addr- 10.8.0.2/24") {
		t.Fatalf("stale IPv6 address handling: %q", r.log())
	}
	if in, _ := installed(r, "sp0", DefaultTable); !slices.Contains(in.Routes, "unreachable ::/0 table 21328 metric 21328") ||
		slices.Contains(in.Routes, "::/0 dev sp0 table 21328") {
		t.Fatalf("::/0 after losing IPv6: %+v", in.Routes)
	}
}
