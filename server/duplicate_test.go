package server

import (
	"crypto/x509"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// answerKeepalives makes d behave like a sallyport laptop: every keepalive
// from the gateway is answered at once. It runs until d's stream ends.
func (d *device) answerKeepalives() {
	go func() {
		for {
			typ, _, err := d.r.Next()
			if err != nil {
				return
			}
			if typ == tunnel.FrameKeepalive {
				if err := d.w.WriteKeepalive(); err != nil {
					return
				}
			}
		}
	}()
}

// TestDuplicateThiefBurst (issue 17): with the laptop connected, a copy of
// its certificate connecting five times in a row never takes the session:
// each attempt is refused with duplicate-device after the laptop answers
// the gateway's probe; one WARN names both addresses; status and metrics
// show the duplicate.
func TestDuplicateThiefBurst(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	h.s.probeTimeout = 10 * time.Second // the laptop answers long before
	cert := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	laptop := h.connect(cert)
	defer laptop.tc.Close()
	laptop.answerKeepalives()
	home := laptop.tc.LocalAddr().String()

	var thief string
	for i := range 5 {
		d := h.dial(cert)
		thief = d.tc.LocalAddr().String()
		if err := d.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion}); err != nil {
			t.Fatal(err)
		}
		d.wantClose(t, tunnel.ReasonDuplicate)
		d.tc.Close()
		if st, live := h.sessionOf("alice"); !live || st.Remote != home {
			t.Fatalf("attempt %d: the session is %+v (live %v); want the laptop's from %s", i+1, st, live, home)
		}
	}
	st := h.s.Status()
	if len(st.Duplicates) != 1 {
		t.Fatalf("status duplicates %+v, want one", st.Duplicates)
	}
	if d := st.Duplicates[0]; d.Device != "alice" || d.Holder != home || d.Other != thief || d.Refused != 5 || d.Serial == "" {
		t.Fatalf("duplicate entry %+v, want holder %s, other %s, 5 refused", d, home, thief)
	}
	if n := h.refused(tunnel.ReasonDuplicate); n != 5 {
		t.Fatalf("%d refusals counted as duplicate-device, want 5", n)
	}
	if m := h.s.MetricsSnapshot(); m.DuplicateDevices != 1 {
		t.Fatalf("metrics: %d duplicate devices, want 1", m.DuplicateDevices)
	}
	warn := "one device certificate is in use on two machines"
	if n := strings.Count(h.logs.String(), warn); n != 1 || !strings.Contains(h.logs.String(), "remote_a="+home) || !strings.Contains(h.logs.String(), "remote_b=") {
		t.Fatalf("%d warnings (want one naming remote_a=%s and remote_b):\n%s", n, home, h.logs.String())
	}
}

// TestDuplicateRoamingLaptop (issue 17): a laptop that comes back from
// another network while its old session is dead but not yet noticed is
// not refused: the old session does not answer the probe (or its own
// keepalives are overdue) and the newcomer replaces it.
func TestDuplicateRoamingLaptop(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	h.s.probeTimeout = 200 * time.Millisecond
	cert := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	old := h.connect(cert) // never reads again: the network it was on is gone
	defer old.tc.Close()
	back := h.connect(cert) // connect fails the test unless a config comes
	defer back.tc.Close()
	if st, live := h.sessionOf("alice"); !live || st.Remote != back.tc.LocalAddr().String() {
		t.Fatalf("session %+v (live %v), want the one from %s", st, live, back.tc.LocalAddr())
	}

	// Its own keepalives overdue (not yet past tunnel.timeout): replaced
	// without waiting for a probe, which would take a minute here.
	h.s.probeTimeout = time.Minute
	idle := h.s.config().Tunnel.Keepalive + defaultProbeTimeout + time.Second
	h.liveSession("alice").lastRecv.Store(time.Now().Add(-idle).UnixNano())
	again := h.dial(cert)
	defer again.tc.Close()
	if err := again.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion}); err != nil {
		t.Fatal(err)
	}
	if typ, _, ok := again.next(5 * time.Second); !ok || typ != tunnel.FrameConfig {
		t.Fatalf("a laptop whose old session's keepalives are overdue: frame %#x (ok %v), want its config at once", typ, ok)
	}
	if n := h.refused(tunnel.ReasonDuplicate); n != 0 || len(h.s.Status().Duplicates) != 0 {
		t.Fatalf("a roaming laptop was counted as a duplicate (%d refusals)", n)
	}
}
