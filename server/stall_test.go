package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/sallyport/sallyport/server/policy"
	"github.com/sallyport/sallyport/tunnel"
)

// connectSmallBuffers is connect with small socket buffers on both ends,
// so that a device that stops reading blocks the gateway's writes after a
// few packets instead of after the megabytes loopback autotuning allows.
func (h *gatewayHarness) connectSmallBuffers(cert tls.Certificate) *device {
	t := h.t
	t.Helper()
	cli, srv := h.tcpPair()
	for _, c := range []net.Conn{cli, srv} {
		_ = c.(*net.TCPConn).SetReadBuffer(4 << 10)
		_ = c.(*net.TCPConn).SetWriteBuffer(4 << 10)
	}
	h.conns.Add(1)
	go func() { defer h.conns.Done(); h.s.handshake(context.Background(), srv, h.s.tlsConfig()) }()
	tc := tls.Client(cli, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: h.gwPool, ServerName: "gw.test",
		Certificates: []tls.Certificate{cert}, NextProtos: []string{tunnel.ALPN}})
	d := &device{tc: tc, w: tunnel.NewWriter(tc, 0), r: tunnel.NewReader(tc, 0)}
	if err := d.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion}); err != nil {
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
	return d
}

// liveSession returns the device's current session.
func (h *gatewayHarness) liveSession(device string) *session {
	h.s.sessMu.Lock()
	defer h.s.sessMu.Unlock()
	for _, ss := range h.s.byKey {
		if ss.id.Device == device {
			return ss
		}
	}
	h.t.Fatalf("no session of %s", device)
	return nil
}

// TestStalledDevice: a device that stops reading while the gateway has
// traffic for it is dropped with reason "stalled", whether it went silent
// too or keeps sending keepalives (which keep the idle timeout from ever
// firing). Before write deadlines both lived forever: the writer blocked
// in TLS holding the frame writer's lock, and the timer blocked behind it.
//
// Two safeguards end a stall, and each alone must: the write deadline (a
// blocked write fails with ErrStalled) and the timer's watchdog (a write
// blocked past the timeout). "watchdog only" switches the deadline off,
// "deadline only" the watchdog; loosening or removing either one makes its
// case run into the 30 s bound and fail, instead of hanging for minutes.
func TestStalledDevice(t *testing.T) {
	for _, tt := range []struct {
		name       string
		keepalives bool
		noDeadline bool // the session's writer gets no write deadline
		noWatchdog bool // the timer never calls a stall
	}{
		{"silent", false, false, false},
		{"sending keepalives", true, false, false},
		{"watchdog only", true, true, false},
		{"deadline only", true, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.noWatchdog {
				orig := watchdog
				watchdog = func(busy, idle, timeout time.Duration) tunnel.Reason {
					if r := orig(busy, idle, timeout); r != tunnel.ReasonStalled {
						return r
					}
					return ""
				}
				t.Cleanup(func() { watchdog = orig })
			}
			before := runtime.NumGoroutine()
			h := newGatewayHarness(t, []policy.Policy{{Name: "dns", Match: policy.Match{CN: []string{"*"}},
				Allow: []string{"192.168.77.0/24 udp"}}}, netip.Prefix{})
			cfg := *h.s.config()
			cfg.Tunnel.Keepalive, cfg.Tunnel.Timeout = 50*time.Millisecond, 500*time.Millisecond
			h.s.setConfig(&cfg)
			d := h.connectSmallBuffers(h.ca.leafWithKey(t, "sleepy", nil, x509.ExtKeyUsageClientAuth))
			d.send(t, udp4(d.addr, "192.168.77.10", 5000, 53)) // opens the flow the replies belong to
			waitFor(t, func() bool { return len(h.tun.packets()) == 1 })
			ss := h.liveSession("sleepy")
			if tt.noDeadline {
				ss.w.(*tunnel.Writer).SetTimeout(nil, 0)
			}

			stop := make(chan struct{})
			sent := make(chan struct{})
			go func() {
				defer close(sent)
				for tt.keepalives {
					select {
					case <-stop:
						return
					case <-time.After(10 * time.Millisecond):
						if d.w.WriteControl(tunnel.FrameKeepalive, nil) != nil {
							return
						}
					}
				}
			}()

			// Replies the device never reads, until the gateway gives up on it
			// (bounded in count and time).
			reply := ipv4(17, "192.168.77.10", d.addr, make([]byte, 1400))
			binary.BigEndian.PutUint16(reply[20:], 53)
			binary.BigEndian.PutUint16(reply[22:], 5000)
			deadline := time.After(30 * time.Second)
		flood:
			for i := range 10_000_000 {
				if i%256 == 255 {
					time.Sleep(time.Millisecond) // plenty to fill any buffer; no need to spin
				}
				select {
				case <-ss.done:
					break flood
				case <-deadline:
					break flood
				case h.tun.in <- reply:
				}
			}
			close(stop)
			<-sent
			select {
			case <-ss.done:
			default:
				t.Fatal("a device that does not read is still connected")
			}
			if r := *ss.reason.Load(); r != tunnel.ReasonStalled {
				t.Fatalf("session closed with reason %q, want stalled", r)
			}
			if n := len(h.s.Status().Sessions); n != 0 {
				t.Fatalf("%d sessions left", n)
			}
			h.close()
			d.tc.Close()
			waitFor(t, func() bool { return runtime.NumGoroutine() <= before })
		})
	}
}

// TestWatchdog: the timer's verdict at the edges of the timeout.
func TestWatchdog(t *testing.T) {
	const to = time.Second
	ms := time.Millisecond
	for _, tt := range []struct {
		busy, idle time.Duration
		want       tunnel.Reason
	}{
		{0, 0, ""},
		{0, to, ""},
		{0, to + ms, tunnel.ReasonTimeout},
		{to, 0, ""},
		{to + ms, 0, tunnel.ReasonStalled},  // a write blocked too long, whatever the device sends
		{ms, to + ms, tunnel.ReasonStalled}, // silent while a write is blocked
		{to + ms, to + ms, tunnel.ReasonStalled},
		{to, to, ""},
	} {
		if got := watchdog(tt.busy, tt.idle, to); got != tt.want {
			t.Errorf("watchdog(busy %v, idle %v) = %q, want %q", tt.busy, tt.idle, got, tt.want)
		}
	}
}
