package e2e

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Helper processes are this test binary re-executed under `ip netns exec`
// with SP_HELPER=<kind> and arguments in SP_HELPER_ARGS (JSON list); they
// print one result per line on stdout, "ready" once listening.

func helperArgs() []string {
	var a []string
	_ = json.Unmarshal([]byte(os.Getenv("SP_HELPER_ARGS")), &a)
	return a
}

// helper starts a helper of kind in ns.
func (tp *Topo) helper(ns, kind string, args ...string) *Proc {
	tp.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		tp.t.Fatal(err)
	}
	js, _ := json.Marshal(args)
	// Under -race the runtime sleeps 1 s at exit by default; helpers are
	// short-lived, so skip that.
	gorace := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	return tp.start(ns, "helper-"+kind+"-"+randHex(2), []string{"SP_HELPER=" + kind, "SP_HELPER_ARGS=" + string(js), "GORACE=" + gorace},
		exe, "-test.run=^TestHelperProcess$")
}

// helperRun runs a helper to completion (up to timeout) and returns stdout.
func (tp *Topo) helperRun(timeout time.Duration, ns, kind string, args ...string) (string, int) {
	tp.t.Helper()
	p := tp.helper(ns, kind, args...)
	if !p.Wait(timeout) {
		// Dump the helper's goroutines (Go prints them on SIGQUIT) for diagnosis.
		p.Signal(syscall.SIGQUIT)
		p.Wait(2 * time.Second)
		p.Stop(time.Second)
		return p.Out() + "\nerror=helper_timed_out_after_" + timeout.String() + "\n" + tail(p.Err(), 30), -1
	}
	if code := p.ExitCode(); code != 0 && !strings.Contains(p.Out(), "error=") {
		return p.Out() + "\nerror=exit " + strconv.Itoa(code) + ": " + p.Err(), code
	}
	return p.Out(), p.ExitCode()
}

// waitReady waits until a listening helper printed "ready".
func waitReady(t *testing.T, p *Proc) {
	t.Helper()
	if !waitFor(15*time.Second, func() bool { return strings.Contains(p.Out(), "ready") || p.Exited() }) || p.Exited() {
		t.Fatalf("helper %s not ready: %s %s", p.Name, p.Out(), p.Err())
	}
}

// field returns the value of key=value in the last line of out containing it.
func field(out, key string) string {
	v := ""
	for _, l := range strings.Split(out, "\n") {
		for _, f := range strings.Fields(l) {
			if strings.HasPrefix(f, key+"=") {
				v = strings.TrimPrefix(f, key+"=")
			}
		}
	}
	return v
}

func runHelper(kind string, args []string) int {
	arg := func(i int) string {
		if i < len(args) {
			return args[i]
		}
		return ""
	}
	var err error
	switch kind {
	case "ping":
		err = helperPing(arg(0), atoi(arg(1), 3), time.Duration(atoi(arg(2), 1000))*time.Millisecond)
	case "tcpsink":
		err = helperTCPSink(arg(0))
	case "tcpsend":
		err = helperTCPSend(arg(0), atoi(arg(1), 1<<20), time.Duration(atoi(arg(2), 3000))*time.Millisecond)
	case "tcpsource":
		err = helperTCPSource(arg(0), atoi(arg(1), 1<<20))
	case "tcpfetch":
		err = helperTCPFetch(arg(0), time.Duration(atoi(arg(1), 3000))*time.Millisecond)
	case "udplisten":
		err = helperUDPListen("udp4", arg(0))
	case "udplisten6":
		err = helperUDPListen("udp6", arg(0))
	case "udpsend":
		err = helperUDPSend(arg(0), arg(1))
	case "udpforge":
		err = helperUDPForge(arg(0), arg(1), arg(2), arg(3))
	case "httpget":
		err = helperHTTPGet(arg(0))
	case "capture":
		err = helperCapture(arg(0), arg(1), atoi(arg(2), 2000), arg(3))
	case "udpblast":
		err = helperUDPBlast(arg(0), arg(1), atoi(arg(2), 1), atoi(arg(3), 1400), atoi(arg(4), 10))
	case "udpany":
		err = helperUDPAny(arg(0), arg(1))
	case "udprecv":
		err = helperUDPListen("udp", arg(0)) // IPv4 or IPv6
	case "fakeresolved":
		err = helperFakeResolved(arg(0))
	case "connectip":
		err = helperConnectIP(arg(0), arg(1), arg(2), arg(3), arg(4), arg(5))
	case "tlsdial":
		err = helperTLSDial(arg(0), arg(1), arg(2), arg(3), arg(4), arg(5))
	case "renew":
		err = helperRenew(arg(0), arg(1), arg(2), arg(3), arg(4), arg(5))
	default:
		err = fmt.Errorf("unknown helper %q", kind)
	}
	if err != nil {
		fmt.Printf("error=%s\n", strings.ReplaceAll(err.Error(), " ", "_"))
		return 1
	}
	return 0
}

func atoi(s string, def int) int {
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	return def
}

// helperPing sends count ICMP (or, to an IPv6 dst, ICMPv6) echo requests
// to dst over a raw socket (no ping binary needed) and prints "received=N".
func helperPing(dst string, count int, wait time.Duration) error {
	ip := net.ParseIP(dst)
	v6 := ip != nil && ip.To4() == nil
	network, laddr, echo, echoReply := "ip4:icmp", "0.0.0.0", byte(8), byte(0)
	if v6 {
		// The kernel fills in the ICMPv6 checksum (RFC 3542).
		network, laddr, echo, echoReply = "ip6:ipv6-icmp", "::", 128, 129
	}
	c, err := net.ListenPacket(network, laddr)
	if err != nil {
		return fmt.Errorf("icmp socket: %w", err)
	}
	defer c.Close()
	id := uint16(os.Getpid())
	replies := make(chan uint16, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			// Type 0 = echo reply; identifier and sequence follow the checksum.
			if n >= 8 && buf[0] == echoReply && binary.BigEndian.Uint16(buf[4:]) == id && from.String() == ip.String() {
				select {
				case replies <- binary.BigEndian.Uint16(buf[6:]):
				default:
				}
			}
		}
	}()
	got := map[uint16]bool{}
	drain := func(until time.Time) {
		for len(got) < count {
			select {
			case seq := <-replies:
				got[seq] = true
			case <-time.After(time.Until(until)):
				return
			}
		}
	}
	for seq := 1; seq <= count; seq++ {
		msg := make([]byte, 8+56)
		msg[0] = echo
		binary.BigEndian.PutUint16(msg[4:], id)
		binary.BigEndian.PutUint16(msg[6:], uint16(seq))
		copy(msg[8:], "sallyport-e2e-ping")
		if !v6 {
			binary.BigEndian.PutUint16(msg[2:], csum(msg))
		}
		if _, err := c.WriteTo(msg, &net.IPAddr{IP: ip}); err != nil {
			fmt.Printf("send_error=%s\n", strings.ReplaceAll(err.Error(), " ", "_"))
		}
		if seq < count {
			drain(time.Now().Add(200 * time.Millisecond))
		}
	}
	drain(time.Now().Add(wait))
	c.Close()
	<-done
	fmt.Printf("sent=%d received=%d\n", count, len(got))
	return nil
}

func csum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// helperTCPSink accepts connections on addr; for each it reads to EOF,
// replies with "bytes=N sha256=X" and prints the same line.
func helperTCPSink(addr string) error {
	return serveTCP(addr, func(c net.Conn) {
		h := sha256.New()
		n, err := io.Copy(h, c)
		line := fmt.Sprintf("from=%s bytes=%d sha256=%s", c.RemoteAddr(), n, hex.EncodeToString(h.Sum(nil)))
		if err != nil {
			line += " read_error=" + strings.ReplaceAll(err.Error(), " ", "_")
		}
		fmt.Println(line)
		_, _ = c.Write([]byte(line + "\n"))
	})
}

// serveTCP listens on addr, prints "ready", and runs handle for each
// connection in its own goroutine, closing the connection after.
func serveTCP(addr string, handle func(net.Conn)) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		go func() {
			defer c.Close()
			handle(c)
		}()
	}
}

// helperTCPSend connects to addr, sends n random bytes, half-closes, and
// prints "sent=N sha256=X echo_bytes=.. echo_sha256=.." from the sink.
func helperTCPSend(addr string, n int, dialTimeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	sum, err := sendRandom(c, n)
	if err != nil {
		return err
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return fmt.Errorf("close write: %w", err)
	}
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read reply: %w", err)
	}
	fmt.Printf("sent=%d sha256=%s echo_bytes=%s echo_sha256=%s\n", n, sum, field(reply, "bytes"), field(reply, "sha256"))
	return nil
}

// sendRandom writes n random bytes to w and returns their sha256 in hex.
func sendRandom(w io.Writer, n int) (string, error) {
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for left := n; left > 0; {
		k := min(left, len(buf))
		_, _ = rand.Read(buf[:k])
		h.Write(buf[:k])
		if _, err := w.Write(buf[:k]); err != nil {
			return "", fmt.Errorf("write: %w", err)
		}
		left -= k
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// helperTCPSource serves n random bytes to each connection and prints
// "served=N sha256=X" for it: the LAN side of a download.
func helperTCPSource(addr string, n int) error {
	return serveTCP(addr, func(c net.Conn) {
		sum, err := sendRandom(c, n)
		if err != nil {
			fmt.Println("served_error=" + strings.ReplaceAll(err.Error(), " ", "_"))
			return
		}
		fmt.Printf("served=%d sha256=%s\n", n, sum)
	})
}

// helperTCPFetch downloads everything addr sends and prints
// "fetched=N sha256=X".
func helperTCPFetch(addr string, dialTimeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		return fmt.Errorf("read after %d bytes: %w", n, err)
	}
	fmt.Printf("fetched=%d sha256=%s\n", n, hex.EncodeToString(h.Sum(nil)))
	return nil
}

// helperUDPListen listens on addr with network ("udp4", or "udp" for
// IPv4 or IPv6) and prints "recv from=IP payload=P" for every datagram.
func helperUDPListen(network, addr string) error {
	c, err := net.ListenPacket(network, addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	fmt.Println("ready")
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		fmt.Printf("recv from=%s payload=%s\n", from.(*net.UDPAddr).IP, strings.ReplaceAll(string(buf[:n]), " ", "_"))
	}
}

// helperUDPSend sends one ordinary UDP datagram.
func helperUDPSend(addr, payload string) error {
	c, err := net.Dial("udp4", addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(payload)); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	fmt.Println("sent=1")
	return nil
}

// helperUDPForge writes a UDP datagram with an arbitrary IPv4 source
// through a raw socket (IPPROTO_RAW implies IP_HDRINCL); the kernel routes
// it by destination, i.e. into the tunnel. dev (IPv6 only, optional) binds
// the socket to an interface.
func helperUDPForge(src, dst, payload, dev string) error {
	s, err := netip.ParseAddr(src)
	if err != nil {
		return fmt.Errorf("source: %w", err)
	}
	dap, err := netip.ParseAddrPort(dst)
	if err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	if s.Is6() {
		return helperUDPForge6(s, dap, payload, dev)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer syscall.Close(fd)
	// A device may aim at broadcast addresses too (the kernel refuses
	// without SO_BROADCAST).
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_BROADCAST, 1); err != nil {
		return fmt.Errorf("SO_BROADCAST: %w", err)
	}
	pl := []byte(payload)
	pkt := make([]byte, 20+8+len(pl))
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	binary.BigEndian.PutUint16(pkt[4:], uint16(os.Getpid()))
	pkt[8] = 64
	pkt[9] = syscall.IPPROTO_UDP
	sa, da := s.As4(), dap.Addr().As4()
	copy(pkt[12:16], sa[:])
	copy(pkt[16:20], da[:])
	binary.BigEndian.PutUint16(pkt[10:], csum(pkt[:20]))
	binary.BigEndian.PutUint16(pkt[20:], 40000)
	binary.BigEndian.PutUint16(pkt[22:], dap.Port())
	binary.BigEndian.PutUint16(pkt[24:], uint16(8+len(pl)))
	copy(pkt[28:], pl)
	// UDP checksum over the pseudo-header.
	ph := make([]byte, 0, 12+8+len(pl))
	ph = append(ph, sa[:]...)
	ph = append(ph, da[:]...)
	ph = append(ph, 0, syscall.IPPROTO_UDP, byte((8+len(pl))>>8), byte(8+len(pl)))
	ph = append(ph, pkt[20:]...)
	binary.BigEndian.PutUint16(pkt[26:], csum(ph))
	if err := syscall.Sendto(fd, pkt, 0, &syscall.SockaddrInet4{Addr: da}); err != nil {
		return fmt.Errorf("sendto: %w", err)
	}
	fmt.Println("sent=1")
	return nil
}

// helperTLSDial performs a sallyport handshake by hand (optionally without
// a client certificate), sends a Hello frame and reports whether the
// gateway answered with a Config frame: "result=config" or
// "result=refused err=...". With holdFile it prints "tls=done" after the
// TLS handshake and holds the hello back until that file exists (at most
// 30 s), as a thief keeping a half-open connection in reserve would; then
// it reports every frame up to the end of the stream ("frames=config,close"
// "close_reason=revoked" "ended_ms=N", time from hello to the end).
func helperTLSDial(addr, serverName, caPath, certPath, keyPath, holdFile string) error {
	pem, err := os.ReadFile(caPath)
	if err != nil {
		return fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return errors.New("no CA certificates in " + caPath)
	}
	cfg := &tls.Config{
		RootCAs:    pool,
		ServerName: serverName,
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{"sallyport/1"},
	}
	if certPath != "" {
		kp, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return fmt.Errorf("load client cert: %w", err)
		}
		// Always present the certificate: with plain Certificates, crypto/tls
		// withholds a cert whose issuer the gateway's CertificateRequest does
		// not list, and the gateway would only ever see "no cert".
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp, nil }
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp4", addr, cfg)
	if err != nil {
		fmt.Printf("result=refused stage=handshake err=%s\n", strings.ReplaceAll(err.Error(), " ", "_"))
		return nil
	}
	defer c.Close()
	if holdFile != "" {
		fmt.Println("tls=done")
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if _, err := os.Stat(holdFile); err == nil {
				break
			}
		}
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	hello := []byte(`{"version":1,"software":"e2e-helper"}`)
	frame := append([]byte{0x10, 0, byte(len(hello) >> 8), byte(len(hello))}, hello...)
	if _, err := c.Write(frame); err != nil {
		fmt.Printf("result=refused stage=write err=%s\n", strings.ReplaceAll(err.Error(), " ", "_"))
		return nil
	}
	if holdFile != "" {
		return readAllFrames(c, time.Now())
	}
	var hdr [4]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil {
		fmt.Printf("result=refused stage=read err=%s\n", strings.ReplaceAll(err.Error(), " ", "_"))
		return nil
	}
	if hdr[0] == 0x11 {
		fmt.Println("result=config")
	} else {
		fmt.Printf("result=refused stage=frame type=0x%02x\n", hdr[0])
	}
	return nil
}

// readAllFrames reports the frames the gateway sends until the stream ends.
func readAllFrames(c net.Conn, since time.Time) error {
	var types []string
	reason := ""
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			break
		}
		body := make([]byte, int(hdr[1])<<16|int(hdr[2])<<8|int(hdr[3]))
		if _, err := io.ReadFull(c, body); err != nil {
			break
		}
		switch hdr[0] {
		case 0x11:
			types = append(types, "config")
		case 0x12:
			types = append(types, "keepalive")
		case 0x13:
			types = append(types, "close")
			var m struct {
				Reason string `json:"reason"`
			}
			_ = json.Unmarshal(body, &m)
			reason = m.Reason
		default:
			types = append(types, fmt.Sprintf("0x%02x", hdr[0]))
		}
	}
	fmt.Printf("frames=%s close_reason=%s ended_ms=%d\n", strings.Join(types, ","), reason, time.Since(since).Milliseconds())
	return nil
}

// helperUDPForge6 is helperUDPForge for IPv6: an IPPROTO_RAW socket of
// AF_INET6 takes the whole IPv6 header (IPV6_HDRINCL) from us.
func helperUDPForge6(s netip.Addr, dap netip.AddrPort, payload, dev string) error {
	fd, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_RAW, syscall.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	defer syscall.Close(fd)
	if dev != "" { // a link-scope destination (ff02::1) leaves by this interface
		if err := syscall.BindToDevice(fd, dev); err != nil {
			return fmt.Errorf("bind to %s: %w", dev, err)
		}
	}
	pl := []byte(payload)
	ulen := 8 + len(pl)
	pkt := make([]byte, 40+ulen)
	pkt[0] = 0x60
	binary.BigEndian.PutUint16(pkt[4:], uint16(ulen))
	pkt[6] = syscall.IPPROTO_UDP
	pkt[7] = 64
	sa, da := s.As16(), dap.Addr().As16()
	copy(pkt[8:24], sa[:])
	copy(pkt[24:40], da[:])
	binary.BigEndian.PutUint16(pkt[40:], 40000)
	binary.BigEndian.PutUint16(pkt[42:], dap.Port())
	binary.BigEndian.PutUint16(pkt[44:], uint16(ulen))
	copy(pkt[48:], pl)
	ph := make([]byte, 0, 40+ulen)
	ph = append(ph, sa[:]...)
	ph = append(ph, da[:]...)
	ph = append(ph, 0, 0, byte(ulen>>8), byte(ulen), 0, 0, 0, syscall.IPPROTO_UDP)
	ph = append(ph, pkt[40:]...)
	binary.BigEndian.PutUint16(pkt[46:], csum(ph))
	if err := syscall.Sendto(fd, pkt, 0, &syscall.SockaddrInet6{Addr: da}); err != nil {
		return fmt.Errorf("sendto: %w", err)
	}
	fmt.Println("sent=1")
	return nil
}
