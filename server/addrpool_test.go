package server

import (
	"errors"
	"net/netip"
	"testing"
)

func TestAddrPool(t *testing.T) {
	p := newAddrPool(netip.MustParsePrefix("10.8.0.0/29")) // .1 gateway, .2-.6 usable, .7 broadcast
	if got := p.Gateway().String(); got != "10.8.0.1/29" {
		t.Fatalf("gateway %s", got)
	}
	p.SetStatic([]netip.Addr{netip.MustParseAddr("10.8.0.3")})
	a, err := p.Acquire("alice", netip.Addr{})
	if err != nil || a.String() != "10.8.0.2" {
		t.Fatalf("alice: %v %v", a, err)
	}
	b, _ := p.Acquire("bob", netip.Addr{})
	if b.String() != "10.8.0.4" {
		t.Fatalf("bob skipped static? got %v", b)
	}
	s, err := p.Acquire("static", netip.MustParseAddr("10.8.0.3"))
	if err != nil || s.String() != "10.8.0.3" {
		t.Fatalf("static: %v %v", s, err)
	}
	if _, err := p.Acquire("intruder", netip.MustParseAddr("10.8.0.3")); err == nil {
		t.Fatal("static address in use handed to another device")
	}
	// Stable across reconnects.
	p.Release("alice", a)
	a2, _ := p.Acquire("alice", netip.Addr{})
	if a2 != a {
		t.Fatalf("alice moved from %v to %v", a, a2)
	}
	c, _ := p.Acquire("carol", netip.Addr{})
	d, _ := p.Acquire("dave", netip.Addr{})
	if c.String() != "10.8.0.5" || d.String() != "10.8.0.6" {
		t.Fatalf("carol %v dave %v", c, d)
	}
	// Full and all live: exhausted.
	if _, err := p.Acquire("erin", netip.Addr{}); !errors.Is(err, errPoolExhausted) {
		t.Fatalf("want exhausted, got %v", err)
	}
	// Bob disconnects: erin reclaims the oldest free lease.
	p.Release("bob", b)
	e, err := p.Acquire("erin", netip.Addr{})
	if err != nil || e != b {
		t.Fatalf("erin: %v %v", e, err)
	}
	// Bob comes back and gets no address held by erin.
	if _, err := p.Acquire("bob", netip.Addr{}); !errors.Is(err, errPoolExhausted) {
		t.Fatalf("bob: %v", err)
	}
}
