package server

import (
	"crypto/x509"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// TestDrain: every device is told "drain", the sessions end, and drain
// returns when they have; a device that connects afterwards gets no
// session.
func TestDrain(t *testing.T) {
	before := runtime.NumGoroutine()
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	alice := h.connect(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	bob := h.connect(h.ca.leafWithKey(t, "bob", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	done := make(chan int, 1)
	go func() { done <- h.s.drain("test") }()
	alice.wantClose(t, "drain")
	bob.wantClose(t, "drain")
	select {
	case left := <-done:
		if left != 0 {
			t.Fatalf("%d sessions left after the drain", left)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("drain did not return")
	}
	if text := scrape(t, h.s); !has(text, `sallyport_session_closes_total{reason="drain"}`, "2") {
		t.Errorf("closes by reason:\n%s", grepSallyport(text))
	}
	late := h.dial(h.ca.leafWithKey(t, "carol", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	if _, _, ok := late.next(5 * time.Second); ok {
		t.Fatal("a device got frames from a drained gateway")
	}
	h.close()
	for _, d := range []*device{alice, bob, late} {
		d.tc.Close()
	}
	waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
}
