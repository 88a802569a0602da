package server

import (
	"net/netip"
	"testing"
)

// TestLeaseSaveOnlyOnChange: a new lease, a moved lease and a lease taken
// over by a static address ask for a save within leaseSaveDelay; a device
// that reconnects to the addresses it had, or leaves, only marks its
// last-seen time for the slower save (a reconnecting fleet would
// otherwise rewrite the whole file every second).
func TestLeaseSaveOnlyOnChange(t *testing.T) {
	p := dualPools()
	dirty := func() bool {
		select {
		case <-p.dirty:
			return true
		default:
			return false
		}
	}
	step := func(name string, wantDirty, wantSeen bool, f func()) {
		t.Helper()
		p.seen.Store(false)
		dirty()
		f()
		if d, s := dirty(), p.seen.Load(); d != wantDirty || s != wantSeen {
			t.Fatalf("%s: save soon %v, last-seen only %v; want %v, %v", name, d, s, wantDirty, wantSeen)
		}
	}
	var a4, a6 netip.Addr
	step("new lease", true, false, func() { a4, a6, _ = p.Acquire("CN=A\x00alice", staticAddr{}) })
	step("leave", false, true, func() { p.Release("CN=A\x00alice", a4, a6) })
	step("same addresses again", false, true, func() {
		if b4, b6, err := p.Acquire("CN=A\x00alice", staticAddr{}); err != nil || b4 != a4 || b6 != a6 {
			t.Fatalf("reconnect got %v %v (%v), want %v %v", b4, b6, err, a4, a6)
		}
	})
	step("second device", true, false, func() { _, _, _ = p.Acquire("CN=A\x00bob", staticAddr{}) })
	step("moved to a static address", true, false, func() {
		_, _, _ = p.Acquire("CN=A\x00alice", staticAddr{v4: netip.MustParseAddr("10.8.0.200")})
	})
}
