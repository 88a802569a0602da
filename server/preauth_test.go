package server

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// fakeCloser records that the table asked for it to be closed.
type fakeCloser struct {
	name   string
	closed bool
}

func (f *fakeCloser) Close() error { f.closed = true; return nil }

// TestShakeTable walks the slot rules step by step: per-source cap, global
// cap, eviction of the oldest connection still waiting for its
// ClientHello (of the source when the source is full, of any when all
// slots are), refusal when every busy slot is past its ClientHello, and
// accounting that returns to zero.
func TestShakeTable(t *testing.T) {
	var tb shakeTable
	a, b := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("2001:db8:1:2::/64")
	conns := map[string]*fakeCloser{}
	slots := map[string]*shakeSlot{}
	admit := func(name string, src netip.Prefix, max, per int) (evicted string, refused tunnel.Reason) {
		t.Helper()
		c := &fakeCloser{name: name}
		slot, victim, r := tb.admit(src, c, max, per)
		if (slot == nil) != (r != "") {
			t.Fatalf("%s: slot %v with refusal %q", name, slot, r)
		}
		if slot != nil {
			conns[name], slots[name] = c, slot
		}
		if victim != nil {
			evicted = victim.conn.(*fakeCloser).name
			if ev, _ := tb.wasEvicted(victim); !ev {
				t.Fatalf("%s: victim %s not marked evicted", name, evicted)
			}
		}
		return evicted, r
	}
	want := func(step string, inFlight, waiting, sources int) {
		t.Helper()
		if i, w, _, s := tb.counts(); i != inFlight || w != waiting || s != sources {
			t.Fatalf("%s: in flight %d, waiting %d, sources %d; want %d %d %d", step, i, w, s, inFlight, waiting, sources)
		}
	}
	const max, per = 4, 2
	for _, step := range []struct {
		name    string
		src     netip.Prefix
		evicted string
		refused tunnel.Reason
	}{
		{"a1", a, "", ""},
		{"a2", a, "", ""},
		{"a3", a, "a1", ""}, // a is at its share: its own oldest waiting one goes
		{"b1", b, "", ""},
		{"b2", b, "", ""},   // four in flight: a2 a3 b1 b2
		{"b3", b, "b1", ""}, // b at its share: b1 goes, not the older a2
	} {
		if ev, r := admit(step.name, step.src, max, per); ev != step.evicted || r != step.refused {
			t.Fatalf("%s: evicted %q refused %q, want %q %q", step.name, ev, r, step.evicted, step.refused)
		}
	}
	want("after the shares", 4, 4, 2)

	// Past their ClientHello, a2 and a3 are not evicted for their own
	// source: a is refused.
	tb.helloDone(slots["a2"])
	tb.helloDone(slots["a3"])
	if ev, r := admit("a4", a, max, per); ev != "" || r != tunnel.ReasonPerSource {
		t.Fatalf("a4: evicted %q refused %q, want per-source-limit", ev, r)
	}
	// A third source finds every slot busy: the oldest waiting one (b2)
	// goes, though a2 and a3 (past their ClientHello) are older.
	c := netip.MustParsePrefix("198.51.100.7/32")
	if ev, r := admit("c1", c, max, per); ev != "b2" || r != "" {
		t.Fatalf("c1: evicted %q refused %q, want b2", ev, r)
	}
	tb.helloDone(slots["b3"])
	tb.helloDone(slots["c1"])
	want("all past their ClientHello", 4, 0, 3)
	// a holds 2, b and c 1: c's newcomer would hold as many as a after an
	// eviction, so nothing is taken from a.
	if ev, r := admit("c2", c, max, per); ev != "" || r != tunnel.ReasonOverload {
		t.Fatalf("c2: evicted %q refused %q, want handshakes-full", ev, r)
	}
	// No limits: anything goes.
	if ev, r := admit("free", c, 0, 0); ev != "" || r != "" {
		t.Fatalf("unlimited: evicted %q refused %q", ev, r)
	}
	tb.release(slots["free"])

	// The table never closes anything itself; the accept loop closes the
	// victims it returns.
	for name, fc := range conns {
		if fc.closed {
			t.Fatalf("%s closed by the table", name)
		}
	}
	// helloDone on an evicted slot says so; release is idempotent.
	if tb.helloDone(slots["a1"]) {
		t.Fatal("helloDone on an evicted slot reported it live")
	}
	for _, name := range []string{"a1", "a2", "a3", "b1", "b2", "b3", "c1", "a2", "c1"} {
		tb.release(slots[name])
	}
	want("all released", 0, 0, 0)
	if len(tb.bySource) != 0 || len(tb.byGroup) != 0 || tb.waiting.Len() != 0 || tb.unproven.Len() != 0 {
		t.Fatalf("leftovers: %v %v, %d waiting, %d unproven", tb.bySource, tb.byGroup, tb.waiting.Len(), tb.unproven.Len())
	}

	// When all slots are full, the heaviest source pays first: the laptop
	// from d waits older than the flood from a, yet a's oldest goes.
	d := netip.MustParsePrefix("203.0.113.5/32")
	for _, step := range []struct {
		name    string
		src     netip.Prefix
		evicted string
	}{
		{"laptop", d, ""}, {"f1", a, ""}, {"f2", a, ""}, {"f3", a, ""},
		{"f4", a, "f1"}, // four in flight: the flooding source's oldest, not the older laptop
		{"g1", b, "f2"},
		{"g2", b, "f3"}, // a holds 2 (f3 f4), b 1, d 1: a's oldest
		{"g3", b, "g1"}, // now b holds 2: b's oldest; the laptop, oldest of all, stays
	} {
		if ev, r := admit(step.name, step.src, 4, 0); ev != step.evicted || r != "" {
			t.Fatalf("%s: evicted %q refused %q, want %q", step.name, ev, r, step.evicted)
		}
	}
}

// TestShakeTableFairShare: strangers past their ClientHello (a whole
// ClientHello, then silence) are evicted only to share the slots out
// between networks: the oldest of the network holding the most, and only
// for a newcomer whose network holds at least two fewer. A stranger
// alone on its network (a laptop mid-handshake) is never evicted; a
// proven connection never is. IPv6 sources share by /48.
func TestShakeTableFairShare(t *testing.T) {
	var tb shakeTable
	names := map[*shakeSlot]string{}
	slots := map[string]*shakeSlot{}
	const max = 6
	step := func(name, src string, wantEvicted string, wantRefused tunnel.Reason) {
		t.Helper()
		slot, victim, r := tb.admit(netip.MustParsePrefix(src), &fakeCloser{name: name}, max, 0)
		got := ""
		if victim != nil {
			got = names[victim]
			if ev, past := tb.wasEvicted(victim); !ev || !past {
				t.Fatalf("%s: victim %s evicted %v past hello %v", name, got, ev, past)
			}
		}
		if got != wantEvicted || r != wantRefused {
			t.Fatalf("%s: evicted %q refused %q, want %q %q", name, got, r, wantEvicted, wantRefused)
		}
		if slot != nil {
			names[slot], slots[name] = name, slot
			tb.helloDone(slot) // every one of them sends its ClientHello at once
		}
	}
	const (
		laptop = "203.0.113.5/32"
		x      = "192.0.2.1/32"
		y      = "192.0.2.2/32"
		z      = "198.51.100.9/32"
	)
	// The flood: x and y stall after their ClientHello; a laptop is
	// mid-handshake.
	step("x1", x, "", "")
	step("laptop", laptop, "", "")
	step("x2", x, "", "")
	step("x3", x, "", "")
	step("y1", y, "", "")
	step("y2", y, "", "")                                     // full: x 3, y 2, laptop 1
	step("z1", z, "x1", "")                                   // x holds 3, z none: x's oldest
	step("z2", z, "", tunnel.ReasonOverload)                  // x 2, y 2, z 1: taking one would only move the imbalance
	step("w1", "198.51.100.10/32", "x2", "")                  // x and y hold 2, w none: the oldest of the heaviest
	step("v1", "198.51.100.11/32", "y1", "")                  // y still holds 2
	step("u1", "198.51.100.12/32", "", tunnel.ReasonOverload) // one each: nothing to share out
	if _, w, u, _ := tb.counts(); w != 0 || u != max {
		t.Fatalf("waiting %d unproven %d", w, u)
	}
	// The laptop is alone on its network: never taken, however old.
	for _, n := range []string{"x1", "x2", "y1"} {
		if !slots[n].gone {
			t.Fatalf("%s still holds a slot", n)
		}
	}
	if slots["laptop"].gone {
		t.Fatal("the laptop's handshake was evicted")
	}

	// A proven connection is never evicted, even from the heaviest network.
	var pt shakeTable
	p1, _, _ := pt.admit(netip.MustParsePrefix(x), &fakeCloser{}, 3, 0)
	p2, _, _ := pt.admit(netip.MustParsePrefix(x), &fakeCloser{}, 3, 0)
	p3, _, _ := pt.admit(netip.MustParsePrefix(x), &fakeCloser{}, 3, 0)
	for _, p := range []*shakeSlot{p1, p2, p3} {
		pt.helloDone(p)
		pt.proven(p)
	}
	if _, v, r := pt.admit(netip.MustParsePrefix(laptop), &fakeCloser{}, 3, 0); v != nil || r != tunnel.ReasonOverload {
		t.Fatalf("proven slots: victim %v refused %q", v, r)
	}
	if pt.proven(p1) != true || pt.helloDone(p1) != true {
		t.Fatal("proven/helloDone on a live slot")
	}

	// IPv6: 3 /64s of one /48 count as one network against a fourth /64
	// elsewhere.
	var vt shakeTable
	for _, src := range []string{"2001:db8:1:1::/64", "2001:db8:1:2::/64", "2001:db8:1:3::/64"} {
		s, _, _ := vt.admit(netip.MustParsePrefix(src), &fakeCloser{}, 3, 0)
		vt.helloDone(s)
	}
	if _, v, r := vt.admit(netip.MustParsePrefix("2001:db8:2:1::/64"), &fakeCloser{}, 3, 0); v == nil || r != "" {
		t.Fatalf("a /48 rotating /64s kept a newcomer out: refused %q", r)
	}
}

// TestShakeTableTake: the datagram path's slots (take) follow the same
// caps without evicting anyone, and come back on release.
func TestShakeTableTake(t *testing.T) {
	var tb shakeTable
	a, b := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32")
	a1, r1 := tb.take(a, 3, 2)
	a2, r2 := tb.take(a, 3, 2)
	if a1 == nil || a2 == nil || r1 != "" || r2 != "" {
		t.Fatal("slots under the caps refused")
	}
	if s, r := tb.take(a, 3, 2); s != nil || r != tunnel.ReasonPerSource {
		t.Fatalf("third from a: %v %q, want per-source-limit", s, r)
	}
	b1, _ := tb.take(b, 3, 2)
	if s, r := tb.take(b, 3, 2); s != nil || r != tunnel.ReasonOverload {
		t.Fatalf("fourth in all: %v %q, want handshakes-full", s, r)
	}
	for _, s := range []*shakeSlot{a1, a2, b1} {
		if s.gone {
			t.Fatal("take evicted a slot")
		}
	}
	tb.release(a1)
	if s, r := tb.take(b, 3, 2); s == nil || r != "" {
		t.Fatalf("after a release: %q", r)
	}
}

// TestSourceOf: IPv4 by address (mapped ones too), IPv6 by /64.
func TestSourceOf(t *testing.T) {
	for in, want := range map[net.Addr]string{
		&net.TCPAddr{IP: net.ParseIP("192.0.2.9"), Port: 1}:                          "192.0.2.9/32",
		&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.9"), Port: 1}:                   "192.0.2.9/32",
		&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:aaaa::1"), Port: 1}:               "2001:db8:1:2::/64",
		&net.TCPAddr{IP: net.ParseIP("2001:db8:1:2:bbbb::9"), Port: 1, Zone: "eth0"}: "2001:db8:1:2::/64",
		&net.UnixAddr{Name: "@x", Net: "unix"}:                                       "invalid Prefix",
	} {
		if got := sourceOf(in).String(); got != want {
			t.Errorf("sourceOf(%v) = %s, want %s", in, got, want)
		}
	}
}

// deadlineConn records the deadlines set on it and serves reads from a
// script.
type deadlineConn struct {
	net.Conn
	deadlines []time.Time
	reads     [][]byte
}

func (c *deadlineConn) SetDeadline(t time.Time) error {
	c.deadlines = append(c.deadlines, t)
	return nil
}
func (c *deadlineConn) Read(b []byte) (int, error) {
	if len(c.reads) == 0 {
		return 0, errors.New("no more script")
	}
	n := copy(b, c.reads[0])
	c.reads = c.reads[1:]
	return n, nil
}

// TestShakeDeadlines: the connection's deadline moves from the accept
// with its stages: first byte, whole ClientHello, the rest of the
// handshake; a timeout is counted under its stage's cause. Each is
// capped by the whole handshake's.
func TestShakeDeadlines(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := preauthLimits{firstByte: 3 * time.Second, hello: 5 * time.Second, handshake: 10 * time.Second}
	var tb shakeTable
	slot, _, _ := tb.admit(netip.MustParsePrefix("192.0.2.1/32"), &fakeCloser{}, 1, 1)
	dc := &deadlineConn{reads: [][]byte{{0x16}, {0x03, 0x01}}}
	sc := newShakeConn(dc, t0, l, &tb, slot)
	if r := timeoutReason(sc.stage); r != tunnel.ReasonFirstByteTimeout {
		t.Fatalf("silent connection times out as %s", r)
	}
	buf := make([]byte, 16)
	sc.Read(buf)
	if r := timeoutReason(sc.stage); r != tunnel.ReasonHelloTimeout {
		t.Fatalf("a connection past its first byte times out as %s", r)
	}
	sc.Read(buf) // more bytes: no new deadline
	sc.helloRead()
	sc.helloRead() // once
	if r := timeoutReason(sc.stage); r != tunnel.ReasonHandshake {
		t.Fatalf("a connection past its ClientHello times out as %s", r)
	}
	want := []time.Time{t0.Add(3 * time.Second), t0.Add(5 * time.Second), t0.Add(10 * time.Second)}
	if len(dc.deadlines) != len(want) {
		t.Fatalf("deadlines %v, want %v", dc.deadlines, want)
	}
	for i := range want {
		if !dc.deadlines[i].Equal(want[i]) {
			t.Fatalf("deadline %d: %v, want %v", i, dc.deadlines[i], want[i])
		}
	}
	if _, waiting, _, _ := tb.counts(); waiting != 0 {
		t.Fatal("the slot still waits for its ClientHello after helloRead")
	}
	// A handshake timeout shorter than the others caps them.
	short := preauthLimits{firstByte: 3 * time.Second, hello: 5 * time.Second, handshake: 2 * time.Second}
	if d := short.deadline(t0, stageAccepted); !d.Equal(t0.Add(2 * time.Second)) {
		t.Fatalf("first-byte deadline %v not capped by the handshake's", d)
	}
}
