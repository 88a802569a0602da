package server

import (
	"crypto/x509"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// connectCaps is connect with capabilities in the hello.
func (h *gatewayHarness) connectCaps(d *device, name string, caps ...string) tunnel.Config {
	t := h.t
	t.Helper()
	if err := d.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion, Caps: caps}); err != nil {
		t.Fatal(err)
	}
	typ, payload, err := d.r.Next()
	if err != nil || typ != tunnel.FrameConfig {
		t.Fatalf("first frame %#x: %v", typ, err)
	}
	pc, err := tunnel.DecodeConfig(payload)
	if err != nil {
		t.Fatal(err)
	}
	d.addr = pc.Address.Addr().String()
	waitFor(t, func() bool { _, ok := h.sessionOf(name); return ok })
	return pc
}

// TestLivePushOnReload: a reload that adds a route pushes the new config
// to a live device that negotiated push, on the same session; a device
// that did not is sent nothing new (old clients keep working).
func TestLivePushOnReload(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	h.reload(engPolicyTOML)
	alice := h.dial(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	pc := h.connectCaps(alice, "alice", tunnel.CapPush)
	if !tunnel.HasCap(pc.Caps, tunnel.CapPush) {
		t.Fatalf("push not negotiated: %v", pc.Caps)
	}
	bob := h.dial(h.ca.leafWithKey(t, "bob", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	if pc := h.connectCaps(bob, "bob"); tunnel.HasCap(pc.Caps, tunnel.CapPush) {
		t.Fatal("push negotiated with a device that did not offer it")
	}
	before, _ := h.sessionOf("alice")

	h.reload(strings.Replace(engPolicyTOML, `allow = [`, `routes = ["192.168.77.0/24", "192.168.99.0/24"]`+"\nallow = [", 1))
	typ, payload, ok := alice.next(5 * time.Second)
	if !ok || typ != tunnel.FramePush {
		t.Fatalf("alice: frame %#x (ok %v), want push", typ, ok)
	}
	got, err := tunnel.DecodePush(payload, pc)
	if err != nil || !slices.Contains(got.Routes, netip.MustParsePrefix("192.168.99.0/24")) {
		t.Fatalf("pushed %+v %v", got.Routes, err)
	}
	if after, _ := h.sessionOf("alice"); !after.Since.Equal(before.Since) {
		t.Fatal("the push replaced the session")
	}
	// A reload that changes nothing pushed sends nothing; the next frame
	// alice sees is the kick.
	h.reload(strings.Replace(engPolicyTOML, `allow = [`, `routes = ["192.168.77.0/24", "192.168.99.0/24"]`+"\nallow = [", 1))
	h.s.Kick("alice")
	alice.wantClose(t, "kicked")
	h.s.Kick("bob")
	bob.wantClose(t, "kicked")
	alice.tc.Close()
	bob.tc.Close()
}
