package client

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/adminsock"
	"github.com/sallyport/sallyport/tunnel"
)

// A whole session through the harness: hello, pushed config applied to the
// laptop (the route covering the gateway too: the marked socket skips the table), packets both
// ways, status, and on shutdown a Close frame to the gateway and every
// change undone. Once per send path: plain device and offloads (raw).
func TestSessionRelay(t *testing.T) {
	for _, vnet := range []bool{false, true} {
		t.Run(fmt.Sprintf("vnet=%v", vnet), func(t *testing.T) {
			noLeaks(t)
			e := startClient(t, envOpt{vnet: vnet})
			s, h := e.up(testConfig())
			if h.Version != tunnel.ProtocolVersion || tunnel.HasCap(h.Caps, tunnel.CapGSO) != vnet {
				t.Fatalf("hello %+v", h)
			}
			select {
			case <-e.ready:
			case <-time.After(wait):
				t.Fatal("ready never called")
			}
			calls := e.sys.log()
			for _, want := range []string{"open fake0", "addr 10.8.0.2/24", "up 1400", "route+ 10.1.0.0/16 dev fake0 table 21328",
				"route+ 127.0.0.0/8 dev fake0 table 21328", "dns [10.1.0.53] [corp.test]"} {
				if !hasLine(calls, want) {
					t.Fatalf("missing %q in %q", want, calls)
				}
			}

			// gateway -> laptop
			in := ping(1)
			if err := s.w.WriteBatch([][]byte{in}, []int{len(in)}, 1, 0); err != nil {
				t.Fatal(err)
			}
			if got := e.tun.recv(t); !bytes.Equal(got.pkt, in) {
				t.Fatalf("TUN got % x, want % x", got.pkt, in)
			}
			// laptop -> gateway; IPv6 without an IPv6 tunnel address is
			// dropped, the IPv4 packet after it arrives.
			v6 := make([]byte, 40)
			v6[0] = 0x60
			e.tun.send(t, v6, tunnel.VnetHdr{})
			out := ping(2)
			e.tun.send(t, out, tunnel.VnetHdr{})
			typ, p := s.next(t)
			if typ != tunnel.FrameData || !bytes.Equal(p, out) {
				t.Fatalf("gateway got %s % x, want the ping", tunnel.FrameName(typ), p)
			}

			// The packet is counted once ReadStream returns, which may be
			// after the TUN has it.
			e.status("one packet in", func(st Status) bool { return st.PacketsIn == 1 })
			var st Status
			if err := adminsock.Call(e.c.cfg.Admin.Socket, adminsock.Request{Cmd: "status"}, &st); err != nil {
				t.Fatal(err)
			}
			if !st.Connected || st.Address != "10.8.0.2/24" || st.Refused != "" || st.Message != "" || st.PacketsIn != 1 || st.Device != "alice-laptop" {
				t.Fatalf("status %+v", st)
			}
			e.status("one packet out", func(st Status) bool { return st.PacketsOut == 1 })

			e.stop()
			if typ, p := s.next(t); typ != tunnel.FrameClose || !strings.Contains(string(p), `"`+string(tunnel.ReasonClientShutdown)+`"`) {
				t.Fatalf("on shutdown the gateway got %s %q, want a Close frame saying %s", tunnel.FrameName(typ), p, tunnel.ReasonClientShutdown)
			}
			calls = e.sys.log()
			for _, want := range []string{"route- 10.1.0.0/16 dev fake0 table 21328", "rule- v4 32700: not fwmark 0x5350 lookup 21328 suppress_prefixlength 0", "dns-"} {
				if !hasLine(calls, want) {
					t.Fatalf("teardown: missing %q in %q", want, calls)
				}
			}
			select {
			case <-e.tun.closed:
			default:
				t.Fatal("TUN not closed")
			}
		})
	}
}

// With offloads and GSO negotiated, a TCP super-packet goes to the gateway
// whole; without GSO on the gateway it is cut into MSS-sized segments. From
// the gateway, a FrameDataGSO with a valid header reaches the TUN whole and
// one with a header that does not describe its packet is dropped.
func TestSessionGSO(t *testing.T) {
	for _, gso := range []bool{false, true} {
		t.Run(fmt.Sprintf("gso=%v", gso), func(t *testing.T) {
			noLeaks(t)
			e := startClient(t, envOpt{vnet: true})
			pc := testConfig()
			if gso {
				pc.Caps = []string{tunnel.CapGSO}
			}
			s, _ := e.up(pc)
			<-e.ready
			super, hdr := tcpSuper(3000, 1000)
			e.tun.send(t, super, hdr)
			if gso {
				typ, p := s.next(t)
				if typ != tunnel.FrameDataGSO || tunnel.DecodeVnetHdr(p) != hdr || !bytes.Equal(p[tunnel.VnetHdrLen:], super) {
					t.Fatalf("gateway got %s of %d bytes, want the super-packet whole", tunnel.FrameName(typ), len(p))
				}
			} else {
				total := 0
				for total < 3000 {
					typ, p := s.next(t)
					if typ != tunnel.FrameData || len(p) != 40+1000 {
						t.Fatalf("gateway got %s of %d bytes, want a 1040-byte segment", tunnel.FrameName(typ), len(p))
					}
					total += len(p) - 40
				}
				return
			}
			bad := append(make([]byte, tunnel.VnetHdrLen), super...)
			tunnel.VnetHdr{Flags: tunnel.VnetFlagNeedsCsum, GSOType: tunnel.VnetGSOTCPv4, HdrLen: 40, CsumStart: 20, CsumOffset: 16}.Encode(bad) // segment size 0
			good := append(make([]byte, tunnel.VnetHdrLen), super...)
			hdr.Encode(good)
			for _, f := range [][]byte{bad, good} {
				if err := s.w.WriteControl(tunnel.FrameDataGSO, f); err != nil {
					t.Fatal(err)
				}
			}
			got := e.tun.recv(t)
			if !got.vnet || got.hdr != hdr || !bytes.Equal(got.pkt, super) {
				t.Fatalf("TUN got vnet=%v %+v %d bytes, want the valid super-packet whole (the bad one dropped)", got.vnet, got.hdr, len(got.pkt))
			}
		})
	}
}

// refusalCodes is the shared vocabulary with the backoff class each has.
var refusalCodes = []struct {
	code      string
	permanent bool
}{
	{"revoked", true}, {"expired", true}, {"bad-eku", true}, {"ca-leaf", true}, {"no-policy", true},
	{"not-allowlisted", true}, {"unknown-ca", true}, {"duplicate-device", false},
	{"crl-stale", false}, {"pool-exhausted", false}, {"capacity", false}, {"replaced", false},
	{"kicked", false}, {"timeout", false}, {"stalled", false}, {"shutdown", false},
}

// checkRefused waits for status to show code, checks the sentence, the log
// line and the backoff class: a permanent refusal waits refused_delay (an
// hour here) and the gateway sees no new attempt; a transient one is
// retried with the normal backoff.
func (e *testEnv) checkRefused(code string, permanent bool) {
	e.t.Helper()
	st := e.status("refused "+code, func(st Status) bool { return st.Refused == code })
	if want := refusals[code].Message; st.Message != want || st.Connected {
		e.t.Fatalf("status %+v, want message %q", st, want)
	}
	left := time.Until(st.RetryAt)
	if permanent && left < 50*time.Minute {
		e.t.Fatalf("permanent refusal %s retries in %v, want refused_delay (1h)", code, left)
	}
	if !permanent && left > e.c.cfg.Reconnect.MaxDelay {
		e.t.Fatalf("transient refusal %s retries in %v, more than max_delay", code, left)
	}
	e.waitLog("reason=" + code)
	if !permanent {
		e.gw.accept(e.t).hello(e.t) // it came back
	}
}

// The gateway refuses an authenticated device with one Close frame right
// after the handshake.
func TestRefusedAtHello(t *testing.T) {
	for _, rc := range refusalCodes {
		t.Run(rc.code, func(t *testing.T) {
			noLeaks(t)
			e := startClient(t, envOpt{})
			s := e.gw.accept(t)
			s.hello(t)
			s.refuse(t, rc.code)
			e.checkRefused(rc.code, rc.permanent)
			if hasLine(e.sys.log(), "addr 10.8.0.2/24") {
				t.Fatal("a refused session touched the laptop's addresses")
			}
		})
	}
}

// The gateway ends a live session with a reason.
func TestClosedLive(t *testing.T) {
	for _, code := range []string{"revoked", "kicked", "replaced", "unknown-ca"} {
		t.Run(code, func(t *testing.T) {
			noLeaks(t)
			e := startClient(t, envOpt{})
			s, _ := e.up(testConfig())
			<-e.ready
			s.refuse(t, code)
			perm := code == "revoked" || code == "unknown-ca"
			e.checkRefused(code, perm)
		})
	}
}

// A gateway that does not trust the device's CA fails the handshake with
// the alert bad_certificate (TLS 1.3: the laptop sees it on its first read).
// crypto/tls sends bad_certificate when VerifyConnection fails (the
// gateway's way) and unknown_ca when ClientCAs does not verify the chain.
func TestRefusedBadCertificate(t *testing.T) {
	for _, how := range []string{"VerifyConnection", "ClientCAs"} {
		t.Run(how, func(t *testing.T) {
			noLeaks(t)
			e := startClient(t, envOpt{gwConf: func(t *testing.T, ca *testCA) *tls.Config {
				other := newTestCA(t, "Another CA")
				conf := gatewayTLS(t, ca, other, nil)
				if how == "VerifyConnection" {
					conf.ClientAuth = tls.RequireAnyClientCert
					conf.VerifyConnection = func(cs tls.ConnectionState) error {
						_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: conf.ClientCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
						return err
					}
				}
				return conf
			}})
			e.checkRefused(codeBadCert, true)
			want := map[string]string{"VerifyConnection": "bad certificate", "ClientCAs": "unknown certificate authority"}[how]
			mustContain(t, e.c.Status().LastError, want)
		})
	}
}

// The laptop refuses a gateway certificate without serverAuth, and one that
// is not the pinned one, and says so in status; both keep retrying.
func TestRefusedGatewayCert(t *testing.T) {
	noLeaks(t)
	t.Run("no EKU", func(t *testing.T) {
		e := startClient(t, envOpt{gwConf: func(t *testing.T, ca *testCA) *tls.Config {
			return gatewayTLS(t, ca, ca, func(c *x509.Certificate) { c.ExtKeyUsage = nil })
		}})
		e.status("gateway-cert", func(st Status) bool { return st.Refused == codeGatewayCert })
		mustContain(t, e.c.Status().LastError, "has no extended key usage")
	})
	t.Run("pin", func(t *testing.T) {
		e := startClient(t, envOpt{edit: func(c *Config) { c.TLS.PinSHA256 = strings.Repeat("ab", 32) }})
		st := e.status("pin-mismatch", func(st Status) bool { return st.Refused == codePin })
		mustContain(t, st.LastError, "does not match tls.pin_sha256")
	})
}

// A gateway that goes silent is dropped after the pushed timeout, with
// keepalives sent meanwhile, and the client reconnects.
func TestKeepaliveTimeout(t *testing.T) {
	noLeaks(t)
	e := startClient(t, envOpt{})
	pc := testConfig()
	pc.Keepalive, pc.Timeout = 5*time.Millisecond, 50*time.Millisecond
	s, _ := e.up(pc)
	_ = s.tls.SetReadDeadline(time.Now().Add(wait))
	if typ, _, err := s.r.Next(); err != nil || typ != tunnel.FrameKeepalive {
		t.Fatalf("gateway got %s, %v; want a keepalive", tunnel.FrameName(typ), err)
	}
	e.status("gateway-silent", func(st Status) bool { return st.Refused == codeSilent })
	e.up(pc)
}

// Keepalive and timeout 0 mean never: the session stays up (a ticker of 0
// would panic).
func TestNoKeepalive(t *testing.T) {
	noLeaks(t)
	e := startClient(t, envOpt{})
	pc := testConfig()
	pc.Keepalive, pc.Timeout = 0, 0
	s, _ := e.up(pc)
	<-e.ready
	in := ping(3)
	if err := s.w.WriteBatch([][]byte{in}, []int{len(in)}, 1, 0); err != nil {
		t.Fatal(err)
	}
	e.tun.recv(t)
	// `sallyport down` over the admin socket ends Run.
	var res map[string]bool
	if err := adminsock.Call(e.c.cfg.Admin.Socket, adminsock.Request{Cmd: "bogus"}, &res); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("unknown admin command: %v", err)
	}
	if err := adminsock.Call(e.c.cfg.Admin.Socket, adminsock.Request{Cmd: "down"}, &res); err != nil || !res["down"] {
		t.Fatalf("down: %v %v", res, err)
	}
	select {
	case err := <-e.done:
		e.done <- err // for stop
	case <-time.After(wait):
		t.Fatal("Run still running after down")
	}
}

// The gateway drops the connection without a word: network trouble, no
// refusal shown, reconnect with the normal backoff.
func TestReconnectAfterDrop(t *testing.T) {
	noLeaks(t)
	e := startClient(t, envOpt{})
	s, _ := e.up(testConfig())
	<-e.ready
	s.tls.Close()
	st := e.status("reconnecting", func(st Status) bool { return !st.Connected && st.LastError != "" })
	if st.Refused != "" || st.Message != "" {
		t.Fatalf("a dropped connection shown as a refusal: %+v", st)
	}
	e.up(testConfig())
	e.status("connected again", func(st Status) bool { return st.Connected })
}

// Malformed answers from the gateway end the attempt with an error naming
// the problem; the client keeps running and retries.
func TestGatewayProtocolErrors(t *testing.T) {
	tests := []struct {
		name string
		send func(*gwConn) error
		want string
	}{
		{"close not JSON", func(s *gwConn) error { return s.w.WriteControl(tunnel.FrameClose, []byte("{revoked")) }, "bad close frame"},
		{"close reason too long", func(s *gwConn) error {
			b, _ := json.Marshal(tunnel.CloseMsg{Reason: strings.Repeat("r", tunnel.MaxReasonLen+1)})
			return s.w.WriteControl(tunnel.FrameClose, b)
		}, "bad close frame"},
		{"config not valid", func(s *gwConn) error { return s.w.WriteControl(tunnel.FrameConfig, []byte(`{"version":1}`)) }, "bad config"},
		{"data before config", func(s *gwConn) error { return s.w.WriteControl(tunnel.FrameData, ping(1)) }, "want config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			noLeaks(t)
			e := startClient(t, envOpt{})
			s := e.gw.accept(t)
			s.hello(t)
			if err := tt.send(s); err != nil {
				t.Fatal(err)
			}
			st := e.status("the error", func(st Status) bool { return strings.Contains(st.LastError, tt.want) })
			if st.Refused != "" {
				t.Fatalf("protocol error shown as refusal %q", st.Refused)
			}
			e.gw.accept(t).hello(t)
		})
	}
}

// A close frame in a live session with an unexpected control frame type
// ends the session as a protocol error.
func TestUnexpectedControl(t *testing.T) {
	noLeaks(t)
	e := startClient(t, envOpt{})
	s, _ := e.up(testConfig())
	<-e.ready
	if err := s.w.WriteControl(tunnel.FrameHello, []byte(`{"version":1}`)); err != nil {
		t.Fatal(err)
	}
	e.status("protocol error", func(st Status) bool { return strings.Contains(st.LastError, "unexpected control frame") })
}

// TestAnswersKeepalive: the laptop answers every keepalive from the
// gateway at once (its own come only every pushed keepalive, an hour
// here): the gateway probes a session this way when another machine
// presents the same certificate, and keeps the session that answers.
func TestAnswersKeepalive(t *testing.T) {
	noLeaks(t)
	e := startClient(t, envOpt{})
	s, _ := e.up(testConfig())
	<-e.ready
	for i := range 3 {
		if err := s.w.WriteKeepalive(); err != nil {
			t.Fatal(err)
		}
		_ = s.tls.SetReadDeadline(time.Now().Add(wait))
		typ, _, err := s.r.Next()
		if err != nil || typ != tunnel.FrameKeepalive {
			t.Fatalf("probe %d: frame %s, %v; want the laptop's keepalive back", i, tunnel.FrameName(typ), err)
		}
	}
}
