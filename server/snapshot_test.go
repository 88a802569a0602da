package server

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// setConfig swaps in cfg, keeping the trust in force (nil on a Server a
// test made by hand).
func (s *Server) setConfig(cfg *Config) {
	var t *trust
	if cur := s.snap.Load(); cur != nil {
		t = cur.trust
	}
	s.snap.Store(&snapshot{cfg: cfg, trust: t})
}

// TestReloadSwapsConfigAndTrustTogether: while reloads alternate between
// two policy sets, every reader sees a config and a trust of the same load
// (the trust's compiled policies are the config's), never a new config
// with the old trust.
func TestReloadSwapsConfigAndTrustTogether(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	ops := strings.ReplaceAll(engPolicyTOML, `name = "eng"`, `name = "ops"`)
	stop := make(chan struct{})
	done := make(chan string)
	go func() {
		checked := 0
		for {
			select {
			case <-stop:
				done <- ""
				return
			default:
			}
			snap := h.s.snap.Load()
			var names []string
			for _, p := range snap.cfg.Policies {
				names = append(names, p.Name)
			}
			if got := snap.trust.policies.Names(); !slices.Equal(got, names) {
				done <- fmt.Sprintf("after %d reads: config has policies %v, trust %v", checked, names, got)
				return
			}
			checked++
			runtime.Gosched()
		}
	}()
	for i := range 20 {
		if i%2 == 0 {
			h.reload(ops)
		} else {
			h.reload(engPolicyTOML)
		}
	}
	close(stop)
	if msg := <-done; msg != "" {
		t.Fatal(msg)
	}
	if got := h.s.trustNow().policies.Names(); !slices.Equal(got, []string{"eng"}) {
		t.Fatalf("policies in force %v", got)
	}
}
