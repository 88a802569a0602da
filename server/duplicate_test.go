package server

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/masque"
)

// answerKeepalives makes d behave like a sallyport laptop: every keepalive
// from the gateway is answered at once. It runs until d's stream ends.
func (d *device) answerKeepalives() { d.answerKeepalivesWhile(nil) }

// answerKeepalivesWhile is answerKeepalives while on is nil or true; once
// it is false, d still reads but answers nothing (a laptop whose answers
// are lost).
func (d *device) answerKeepalivesWhile(on *atomic.Bool) {
	go func() {
		for {
			typ, _, err := d.r.Next()
			if err != nil {
				return
			}
			if typ == tunnel.FrameKeepalive && (on == nil || on.Load()) {
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
	defer func() {
		if t.Failed() {
			t.Log(h.logs.String())
		}
	}()

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

// answerQUICKeepalives makes the datagram-path link behave like a
// sallyport laptop: every keepalive capsule is answered at once; nothing
// else is ever sent (QUIC keeps the path alive by itself, so an idle
// laptop sends the gateway no capsule of its own).
func answerQUICKeepalives(link *masque.Link) {
	go func() {
		for {
			typ, v, err := link.NextCapsule()
			if err != nil {
				return
			}
			if typ != masque.CapsuleSallyport {
				continue
			}
			if ft, _, err := masque.ParseFrame(v); err == nil && ft == tunnel.FrameKeepalive {
				if _, err := link.TryWriteControl(tunnel.FrameKeepalive, nil); err != nil {
					return
				}
			}
		}
	}()
}

// TestDuplicateIdleQUICLaptop: a laptop on the datagram path sends no
// keepalive of its own (QUIC's PINGs never reach the gateway's session),
// so an idle one has sent nothing for longer than tunnel.keepalive. A
// thief with a copy must still be refused: the session is probed (and
// answers), not taken as silent.
func TestDuplicateIdleQUICLaptop(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	h.s.probeTimeout = 10 * time.Second // the laptop answers long before
	addr := h.startQUIC()
	cert := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	qc, link, _ := h.sallyportQUIC(addr, cert)
	defer qc.CloseWithError(0, "")
	answerQUICKeepalives(link)
	// Idle for a while: nothing from the laptop since it came up.
	idle := h.s.config().Tunnel.Keepalive + defaultProbeTimeout + time.Second
	h.liveSession("alice").lastRecv.Store(time.Now().Add(-idle).UnixNano())

	thief := h.dial(cert)
	defer thief.tc.Close()
	if err := thief.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion}); err != nil {
		t.Fatal(err)
	}
	thief.wantClose(t, tunnel.ReasonDuplicate)
	if st, live := h.sessionOf("alice"); !live || st.Path != pathQUIC {
		t.Fatalf("the idle QUIC laptop lost its session to a copy: %+v (live %v)", st, live)
	}
}

// probing waits until the live session of device has a probe in flight.
func (h *gatewayHarness) probing(device string) {
	h.t.Helper()
	ss := h.liveSession(device)
	waitFor(h.t, func() bool { ss.probeMu.Lock(); defer ss.probeMu.Unlock(); return ss.probing != nil })
}

// newcomer connects a copy of cert in the background; the channel gets
// the first frame type the gateway sends it after the hello (config or
// close), or 0.
func (h *gatewayHarness) newcomer(cert tls.Certificate) (*device, chan byte) {
	d := h.dial(cert)
	got := make(chan byte, 1)
	go func() {
		if err := d.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion}); err != nil {
			got <- 0
			return
		}
		typ, _, ok := d.next(10 * time.Second)
		if !ok {
			typ = 0
		}
		got <- typ
	}()
	return d, got
}

// TestDuplicateOldSessionEndsDuringProbe: a session that ends while it is
// probed (its connection closes, or it sends a Close: a laptop going
// away, or upgrading from the TLS stream to the datagram path) has not
// answered: the newcomer replaces it, with no duplicate recorded.
func TestDuplicateOldSessionEndsDuringProbe(t *testing.T) {
	for _, how := range []string{"eof", "close frame"} {
		t.Run(how, func(t *testing.T) {
			h := newGatewayHarness(t, engPolicy, netip.Prefix{})
			defer h.close()
			h.s.probeTimeout = time.Minute // ends only with the old session
			cert := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
			old := h.connect(cert)
			defer old.tc.Close()
			d, got := h.newcomer(cert)
			defer d.tc.Close()
			h.probing("alice")
			if how == "eof" {
				old.tc.Close()
			} else if err := old.w.WriteClose("user"); err != nil {
				t.Fatal(err)
			}
			if typ := <-got; typ != tunnel.FrameConfig {
				t.Fatalf("newcomer got frame %#x, want its config (refusals %v)", typ, h.s.refusals.counts())
			}
			if n := h.refused(tunnel.ReasonDuplicate); n != 0 || strings.Contains(h.logs.String(), "two machines") {
				t.Fatalf("a session that went away was taken for a second machine (%d refusals):\n%s", n, h.logs.String())
			}
		})
	}
}

// TestDuplicateTransportEvidence: the laptop's answer may queue behind
// megabytes (a slow link, a full send buffer), but its connection still
// receives from it: TCP segments (its kernel's ACKs) on the TLS stream,
// QUIC packets on the datagram path. Here the laptop answers nothing at
// all, and its session still keeps the device against a copy.
func TestDuplicateTransportEvidence(t *testing.T) {
	t.Run("tls", func(t *testing.T) {
		if runtime.GOOS != "linux" {
			t.Skip("TCP_INFO is Linux's")
		}
		h := newGatewayHarness(t, engPolicy, netip.Prefix{})
		defer h.close()
		h.s.probeNoTransport = false
		h.s.probeTimeout = 10 * time.Second // the kernel's ACK comes long before
		cert := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
		laptop := h.connect(cert) // never reads again; its kernel acknowledges
		defer laptop.tc.Close()
		thief := h.dial(cert)
		defer thief.tc.Close()
		if err := thief.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion}); err != nil {
			t.Fatal(err)
		}
		thief.wantClose(t, tunnel.ReasonDuplicate)
		if st, live := h.sessionOf("alice"); !live || st.Remote != laptop.tc.LocalAddr().String() {
			t.Fatalf("session %+v (live %v), want the laptop's", st, live)
		}
	})
	t.Run("quic", func(t *testing.T) {
		h := newGatewayHarness(t, engPolicy, netip.Prefix{})
		defer h.close()
		h.s.probeNoTransport = false
		h.s.probeTimeout = 10 * time.Second
		addr := h.startQUIC()
		cert := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
		qc, _, _ := h.sallyportQUIC(addr, cert) // reads no capsule: answers nothing
		defer qc.CloseWithError(0, "")
		thief := h.dial(cert)
		defer thief.tc.Close()
		if err := thief.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion}); err != nil {
			t.Fatal(err)
		}
		thief.wantClose(t, tunnel.ReasonDuplicate)
		if st, live := h.sessionOf("alice"); !live || st.Path != pathQUIC {
			t.Fatalf("session %+v (live %v), want the QUIC laptop's", st, live)
		}
	})
}

// TestTCPProgress: the kernel's count of what the peer acknowledged and
// sent moves when the peer sends or acknowledges, and only then.
func TestTCPProgress(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TCP_INFO is Linux's")
	}
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	cli, srv := h.tcpPair()
	defer cli.Close()
	defer srv.Close()
	ss := &session{raw: srv}
	moved := ss.transportMark()
	if moved == nil {
		t.Fatal("no TCP_INFO for a loopback TCP connection")
	}
	time.Sleep(50 * time.Millisecond) // an idle peer: nothing may move meanwhile
	if moved() {
		t.Fatal("an idle peer counted as heard")
	}
	if _, err := cli.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, moved)
	acked := ss.transportMark()
	if _, err := srv.Write([]byte("y")); err != nil { // the peer's kernel acknowledges it
		t.Fatal(err)
	}
	waitFor(t, acked)
	if _, ok := tcpProgress(&net.UnixConn{}); ok {
		t.Fatal("TCP_INFO of a connection that is not TCP")
	}
}

// TestDuplicateDispute: once a copy has been refused, the device is in
// dispute: the session in place keeps it while it lives even when it
// stops answering (the one probe a laptop on a bad link misses must not
// hand the thief the device). When it ends, the next connection gets the
// device, and the gateway warns which address holds it now.
func TestDuplicateDispute(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	h.s.probeTimeout = 100 * time.Millisecond
	cert := h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth)
	laptop := h.connect(cert)
	defer laptop.tc.Close()
	var answering atomic.Bool
	answering.Store(true)
	laptop.answerKeepalivesWhile(&answering)
	home := laptop.tc.LocalAddr().String()

	try := func(want tunnel.Reason) *device {
		t.Helper()
		d := h.dial(cert)
		if err := d.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion}); err != nil {
			t.Fatal(err)
		}
		if want == "" {
			if typ, _, ok := d.next(5 * time.Second); !ok || typ != tunnel.FrameConfig {
				t.Fatalf("frame %#x (ok %v), want config", typ, ok)
			}
			return d
		}
		d.wantClose(t, want)
		d.tc.Close()
		return nil
	}
	try(tunnel.ReasonDuplicate) // the laptop answers: a dispute begins
	answering.Store(false)      // its answers are lost from now on
	try(tunnel.ReasonDuplicate)
	try(tunnel.ReasonDuplicate)
	if st, live := h.sessionOf("alice"); !live || st.Remote != home {
		t.Fatalf("during the dispute the session went to %+v (live %v), want the laptop's from %s", st, live, home)
	}
	if d := h.s.Status().Duplicates; len(d) != 1 || d[0].Refused != 3 {
		t.Fatalf("duplicates %+v, want 3 refused", d)
	}
	laptop.tc.Close() // the session in place ends
	waitFor(t, func() bool { _, live := h.sessionOf("alice"); return !live })
	thief := try("")
	defer thief.tc.Close()
	if !strings.Contains(h.logs.String(), "remote_before="+home) || !strings.Contains(h.logs.String(), "remote_now="+thief.tc.LocalAddr().String()) {
		t.Fatalf("no warning naming who holds the disputed device now:\n%s", h.logs.String())
	}
	if d := h.s.Status().Duplicates; len(d) != 1 || d[0].Holder != thief.tc.LocalAddr().String() {
		t.Fatalf("duplicates %+v, want the holder updated", d)
	}
}
