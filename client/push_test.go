package client

import (
	"bytes"
	"net/netip"
	"slices"
	"testing"

	"github.com/sallyport/sallyport/tunnel"
)

// TestLivePush: the hello offers push; a FramePush adds a route, drops
// one and the DNS on the live session without a reconnect; a push that
// would move the address ends the session and the client reconnects.
func TestLivePush(t *testing.T) {
	noLeaks(t)
	e := startClient(t, envOpt{})
	pc := testConfig()
	pc.Caps = []string{tunnel.CapPush}
	s, h := e.up(pc)
	if !tunnel.HasCap(h.Caps, tunnel.CapPush) {
		t.Fatalf("hello does not offer push: %+v", h)
	}
	<-e.ready

	next := pc
	next.Routes = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("10.99.0.0/16")}
	next.DNS, next.SearchDomains = nil, nil
	b, _ := tunnel.EncodeConfig(next)
	if err := s.w.WriteControl(tunnel.FramePush, b); err != nil {
		t.Fatal(err)
	}
	e.status("the pushed route", func(st Status) bool { return slices.Contains(st.Routes, "10.99.0.0/16") })
	calls := e.sys.log()
	for _, want := range []string{"route+ 10.99.0.0/16 dev fake0 table 21328", "route- 127.0.0.0/8 dev fake0 table 21328", "dns-"} {
		if !hasLine(calls, want) {
			t.Errorf("missing %q in %q", want, calls)
		}
	}
	// Same session: a packet still comes through it.
	in := ping(7)
	if err := s.w.WriteBatch([][]byte{in}, []int{len(in)}, 1, 0); err != nil {
		t.Fatal(err)
	}
	if got := e.tun.recv(t); !bytes.Equal(got.pkt, in) {
		t.Fatal("the session did not survive the push")
	}

	// A push that moves the address is refused: reconnect.
	moved := next
	moved.Address = netip.MustParsePrefix("10.8.0.99/24")
	b, _ = tunnel.EncodeConfig(moved)
	if err := s.w.WriteControl(tunnel.FramePush, b); err != nil {
		t.Fatal(err)
	}
	s2, _ := e.up(pc)
	_ = s2
	e.waitLog("changes the address")
}
