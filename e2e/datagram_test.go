package e2e

// The datagram path (CONNECT-IP over QUIC) end to end: a laptop on it, the
// fall back to the TLS stream when UDP is blocked and the move back when
// it is not, revocation cutting a QUIC session, and connect-ip-go's own
// client (not sallyport's) pinging a LAN host through the gateway.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	connectip "github.com/quic-go/connect-ip-go"
	"github.com/quic-go/quic-go"
	"github.com/vishvananda/netns"
	"github.com/yosida95/uritemplate/v3"
)

// datagramLaptop starts a gateway and alice's laptop with transport.mode
// = "auto" and waits until the laptop is up on the datagram path.
func datagramLaptop(t *testing.T) (*Topo, *PKI, *Gateway, *Laptop, ClientStatus) {
	t.Helper()
	requireRoot(t)
	tp := newTopo(t, false)
	k := stdPKI(t)
	sock := shortTempDir(t)
	gw := tp.startGateway(defaultServerConf(k, "wireguard", sock))
	cc := clientConf(k, "alice", "wireguard", sock)
	cc.Transport = "auto"
	lap := tp.startLaptop(tp.Lap, "alice", cc)
	st := lap.waitUp(15 * time.Second)
	if st.Path != "quic" {
		t.Fatalf("laptop path %q (%s), want quic", st.Path, st.PathReason)
	}
	return tp, k, gw, lap, st
}

// TestDatagramPath: a laptop with transport.mode = "auto" comes up on the
// datagram path; status on both ends names it; ping and a TCP transfer
// reach the LAN host (the transfer's segments fit the datagram-sized MTU).
func TestDatagramPath(t *testing.T) {
	tp, _, gw, _, st := datagramLaptop(t)
	if st.MTU < 1280 || st.MTU >= 1500 {
		t.Errorf("tunnel MTU %d on the datagram path, want the datagram size (1280..1499)", st.MTU)
	}
	if s, ok := gw.Session("alice"); !ok || s.Path != "quic" {
		t.Fatalf("gateway session %+v, want path quic", s)
	}
	if n := tp.ping(tp.Lap, lanHost, 3); n != 3 {
		t.Fatalf("%d of 3 pings answered through the datagram path", n)
	}
	sink := tp.helper(tp.LAN, "tcpsink", lanHost+":5201")
	waitReady(t, sink)
	out, _ := tp.helperRun(30*time.Second, tp.Lap, "tcpsend", lanHost+":5201", strconv.Itoa(4<<20))
	if e := field(out, "error"); e != "" {
		t.Fatalf("TCP transfer through the datagram path: %s", out)
	}
	if s, _ := gw.Session("alice"); s.BytesIn < 4<<20 {
		t.Errorf("gateway counted %d bytes in, want at least the 4 MiB sent", s.BytesIn)
	}
}

// TestDatagramFallback: with UDP to the gateway blocked, the laptop is up
// on the TLS stream and status says why: at once when the laptop's own
// firewall refuses the packets, after fallback_after when a firewall on
// the way drops them silently. Once UDP passes again it moves to the
// datagram path by itself (transport.retry_udp).
func TestDatagramFallback(t *testing.T) {
	requireRoot(t)
	for _, tc := range []struct {
		name string
		ns   func(tp *Topo) string
		hook *nftables.ChainHook
		why  string
	}{
		{"refused on the laptop", func(tp *Topo) string { return tp.Lap }, nftables.ChainHookOutput, "UDP failed"},
		{"dropped on the way", func(tp *Topo) string { return tp.GW }, nftables.ChainHookInput, "UDP gave no answer within 1s"},
	} {
		t.Run(tc.name, func(t *testing.T) { testFallback(t, tc.ns, tc.hook, tc.why) })
	}
}

func testFallback(t *testing.T, blockIn func(*Topo) string, hook *nftables.ChainHook, why string) {
	tp := newTopo(t, false)
	k := stdPKI(t)
	sock := shortTempDir(t)
	gw := tp.startGateway(defaultServerConf(k, "wireguard", sock))
	unblock := blockUDP(t, blockIn(tp), hook, 8443)
	cc := clientConf(k, "alice", "wireguard", sock)
	cc.Transport = "" // set here: the table is written once
	cc.Extra += "\n[transport]\nmode = \"auto\"\nretry_udp = \"1s\"\n"
	lap := tp.startLaptop(tp.Lap, "alice", cc)
	st := lap.waitUp(15 * time.Second)
	if st.Path != "tls" || !strings.Contains(st.PathReason, why) {
		t.Fatalf("laptop path %q (%q), want tls because %s", st.Path, st.PathReason, why)
	}
	if n := tp.ping(tp.Lap, lanHost, 2); n != 2 {
		t.Fatalf("%d of 2 pings answered on the fallback", n)
	}
	unblock()
	if !waitFor(20*time.Second, func() bool {
		st, err := lap.Status()
		return err == nil && st.Connected && st.Path == "quic"
	}) {
		st, _ := lap.Status()
		t.Fatalf("laptop did not move to the datagram path after UDP was unblocked: %+v\n%s", st, tail(lap.Proc.Err(), 20))
	}
	if !waitFor(10*time.Second, func() bool { s, ok := gw.Session("alice"); return ok && s.Path == "quic" }) {
		t.Fatal("gateway session not on the datagram path")
	}
	if n := tp.ping(tp.Lap, lanHost, 2); n != 2 {
		t.Fatalf("%d of 2 pings answered after the move", n)
	}
}

// TestDatagramRevocation: revoking a device cuts its QUIC session like a
// TLS one; its next attempts are refused on QUIC (handshake) and on the
// fallback TLS stream, which tells the laptop why.
func TestDatagramRevocation(t *testing.T) {
	_, k, gw, lap, _ := datagramLaptop(t)
	start := time.Now()
	k.Revoke("alice")
	if !waitFor(5*time.Second, func() bool { _, ok := gw.Session("alice"); return !ok }) {
		t.Fatal("the revoked device's QUIC session survived the CRL reload")
	}
	t.Logf("QUIC session cut %v after the CRL changed", time.Since(start).Round(time.Millisecond))
	var msg string
	if !waitFor(15*time.Second, func() bool { msg = laptopMessage(t, lap); return msg != "" }) {
		t.Fatalf("laptop status shows no refusal after the revocation:\n%s", tail(lap.Proc.Err(), 20))
	}
	if !strings.Contains(msg, "revoked") {
		t.Errorf("laptop refusal message %q, want it to say revoked", msg)
	}
	// The cut itself is the refusal (the gateway's CONNECTION_CLOSE says
	// why, whether or not its Close capsule got there first), not a lost
	// connection retried at once.
	if log := lap.Proc.Err(); strings.Contains(log, "disconnected from gateway") {
		t.Errorf("the revocation was logged as a lost connection:\n%s", tail(log, 10))
	}
}

// TestConnectIPInterop: connect-ip-go's own client (not sallyport's),
// configured with a device certificate, connects to the gateway, gets its
// address and routes in capsules and pings the LAN host through it.
func TestConnectIPInterop(t *testing.T) {
	requireRoot(t)
	tp := newTopo(t, false)
	k := stdPKI(t)
	sock := shortTempDir(t)
	gw := tp.startGateway(defaultServerConf(k, "wireguard", sock))
	crt, key := k.Device("alice")
	out, _ := tp.helperRun(30*time.Second, tp.Lap, "connectip", listen, gwName, k.CA(), crt, key, lanHost)
	if e := field(out, "error"); e != "" || field(out, "reply") != "ok" {
		t.Fatalf("connect-ip-go client: %s\ngateway:\n%s", out, tail(gw.Proc.Err(), 20))
	}
	if a := field(out, "address"); !strings.HasPrefix(a, "10.213.0.") {
		t.Errorf("assigned address %q, want one of the pool", a)
	}
	if r := field(out, "routes"); !strings.Contains(r, "198.19.77.0-198.19.77.255") {
		t.Errorf("advertised routes %q, want the policy's LAN", r)
	}
	// Without a certificate the same client gets nothing.
	out, _ = tp.helperRun(30*time.Second, tp.Lap, "connectip", listen, gwName, k.CA(), "", "", lanHost)
	if field(out, "reply") == "ok" || !strings.Contains(out, "error=") {
		t.Fatalf("connect-ip-go client without a certificate: %s", out)
	}
}

// helperConnectIP is connect-ip-go's client: dial the gateway at addr with
// the device certificate (none when cert is ""), then ping target through
// the tunnel with a hand-made ICMP echo from the assigned address.
func helperConnectIP(addr, serverName, caPath, certPath, keyPath, target string) error {
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	tc := &tls.Config{RootCAs: roots, ServerName: serverName, NextProtos: []string{"h3"}}
	if certPath != "" {
		cert, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := connectip.NewRequest(ctx, uritemplate.MustNew("https://"+addr+"/.well-known/masque/ip/*/*/"))
	if err != nil {
		return err
	}
	tr := &connectip.Transport{TLSClientConfig: tc, QUICConfig: &quic.Config{EnableDatagrams: true, InitialPacketSize: 1350}}
	conn, _, err := tr.Dial(req)
	if err != nil {
		return err
	}
	defer conn.Close()
	assigned, err := conn.ReceiveAddressAssignment(ctx)
	if err != nil || len(assigned) == 0 {
		return fmt.Errorf("no address assigned: %v", err)
	}
	routes, err := conn.Routes(ctx)
	if err != nil {
		return err
	}
	var rs []string
	for _, r := range routes {
		rs = append(rs, r.StartIP.String()+"-"+r.EndIP.String())
	}
	me := assigned[0].IPPrefix.Addr()
	fmt.Printf("address=%s routes=%s\n", me, strings.Join(rs, ","))
	dst := netip.MustParseAddr(target)
	id := uint16(os.Getpid())
	echo := icmpEcho(me, dst, id, 1)
	replied := make(chan error, 1)
	go func() {
		buf := make([]byte, 2000)
		for {
			n, err := conn.ReadPacket(buf)
			if err != nil {
				replied <- err
				return
			}
			p := buf[:n]
			if n >= 28 && p[9] == 1 && p[20] == 0 && binary.BigEndian.Uint16(p[24:26]) == id && netip.AddrFrom4([4]byte(p[12:16])) == dst {
				replied <- nil
				return
			}
		}
	}()
	for range 5 {
		if _, err := conn.WritePacket(append([]byte(nil), echo...)); err != nil {
			return err
		}
		select {
		case err := <-replied:
			if err != nil {
				return err
			}
			fmt.Println("reply=ok")
			return nil
		case <-time.After(time.Second):
		}
	}
	return errors.New("no echo reply through the tunnel")
}

// icmpEcho is an IPv4 ICMP echo request from src to dst.
func icmpEcho(src, dst netip.Addr, id, seq uint16) []byte {
	p := make([]byte, 20+8+16)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	p[8], p[9] = 64, 1
	s, d := src.As4(), dst.As4()
	copy(p[12:16], s[:])
	copy(p[16:20], d[:])
	binary.BigEndian.PutUint16(p[10:12], csum(p[:20]))
	m := p[20:]
	m[0] = 8
	binary.BigEndian.PutUint16(m[4:6], id)
	binary.BigEndian.PutUint16(m[6:8], seq)
	copy(m[8:], "connect-ip-go")
	binary.BigEndian.PutUint16(m[2:4], csum(m))
	return p
}

// blockUDP drops UDP to port in namespace ns at hook (output: the sender's
// own firewall, its sendmsg fails; input: silently, on the way) with an
// nftables table of the test's own; the returned func removes it.
func blockUDP(t *testing.T, ns string, hook *nftables.ChainHook, port uint16) func() {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	h, err := netns.GetFromName(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	tb := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "spe2e-block"})
	ch := c.AddChain(&nftables.Chain{Name: "out", Table: tb, Type: nftables.ChainTypeFilter,
		Hooknum: hook, Priority: nftables.ChainPriorityFilter})
	c.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{17}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := c.Flush(); err != nil {
		t.Fatalf("nftables in %s: %v", ns, err)
	}
	return func() {
		h, err := netns.GetFromName(ns)
		if err != nil {
			t.Error(err)
			return
		}
		defer h.Close()
		c, err := nftables.New(nftables.WithNetNSFd(int(h)))
		if err != nil {
			t.Error(err)
			return
		}
		c.DelTable(tb)
		if err := c.Flush(); err != nil {
			t.Errorf("remove the UDP block: %v", err)
		}
	}
}
