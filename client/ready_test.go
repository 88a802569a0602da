package client

import (
	"strings"
	"testing"
	"time"
)

// TestReadyBeforeSession: the service is READY once the TUN device (and the
// kill switch) are in place, not after the first session, so a boot without
// the gateway does not wait out the start timeout; the status line says
// whether a session is up.
func TestReadyBeforeSession(t *testing.T) {
	noLeaks(t)
	devReady := make(chan struct{})
	e := startClient(t, envOpt{onReady: func() { close(devReady) }})
	select {
	case <-devReady:
	case <-time.After(wait):
		t.Fatal("ready not called while no session is up")
	}
	select {
	case <-e.ready:
		t.Fatal("a session is up although the gateway never answered")
	default:
	}
	if !hasLine(e.sys.log(), "open fake0") {
		t.Fatalf("ready before the device was opened: %q", e.sys.log())
	}
	s, _ := e.up(testConfig())
	<-e.ready
	s.tls.Close()
	deadline := time.Now().Add(wait)
	for {
		e.stMu.Lock()
		states := strings.Join(e.states, "\n")
		e.stMu.Unlock()
		if strings.HasPrefix(states, "-not connected: connecting to ") &&
			strings.Contains(states, "\n+connected to ") && strings.Contains(states, ", address 10.8.0.2/24\n-not connected: ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status lines:\n%s", states)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
