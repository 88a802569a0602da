package e2e

import (
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestStalledLaptop: a laptop that stops reading in the middle of a
// download (its sallyport process frozen with SIGSTOP: it neither reads
// nor sends keepalives) is dropped by the gateway within the session
// timeout with reason stalled, and reconnects once it runs again. Before
// write deadlines the gateway's writer blocked in TLS holding the frame
// writer's lock, the timer blocked behind it, and the session lived until
// kernel TCP gave up (~15 min).
func TestStalledLaptop(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	sock := shortTempDir(t)
	sc := defaultServerConf(k, "wireguard", sock)
	sc.TunnelExtra = "keepalive = \"1s\"\ntimeout = \"3s\"\n"
	gw := tp.startGateway(sc)
	lap := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	me := strings.Split(lap.waitUp(15*time.Second).Address, "/")[0]

	// The laptop opens a UDP flow to the LAN host, so the gateway lets the
	// host's answers through.
	if out, _ := tp.helperRun(10*time.Second, tp.Lap, "udpblast", "0.0.0.0:9401", lanHost+":9400", "1", "100", "5"); field(out, "sent") != "1" {
		t.Fatalf("laptop could not open the flow: %s", out)
	}
	lap.Proc.Signal(syscall.SIGSTOP)
	resumed := false
	defer func() {
		if !resumed {
			lap.Proc.Signal(syscall.SIGCONT)
		}
	}()

	// The host answers with far more than the sockets between gateway and
	// laptop hold (bounded in count and time).
	blast := tp.helper(tp.LAN, "udpblast", lanHost+":9400", me+":9401", "400000", "1400", "30")
	dropped := waitFor(25*time.Second, func() bool { _, live := gw.Session("alice"); return !live })
	blast.Stop(time.Second)
	if !dropped {
		t.Fatalf("the gateway still holds the session of a laptop that stopped reading\n%s", tail(gw.Proc.Log(), 20))
	}
	var closed string
	for _, l := range strings.Split(gw.Proc.Log(), "\n") {
		if strings.Contains(l, "session closed") && strings.Contains(l, "alice") {
			closed = l
		}
	}
	if !strings.Contains(closed, "reason=stalled") {
		t.Fatalf("session closed line %q, want reason=stalled\n%s", closed, tail(gw.Proc.Log(), 20))
	}

	lap.Proc.Signal(syscall.SIGCONT)
	resumed = true
	lap.waitUp(20 * time.Second)
	if !waitFor(10*time.Second, func() bool { return tp.ping(tp.Lap, lanHost, 1) == 1 }) {
		t.Fatal("no traffic through the tunnel after the laptop resumed")
	}
}

// helperUDPBlast sends count datagrams of size bytes from local to remote,
// for at most seconds, and prints "sent=N". Send errors (a full queue, an
// ICMP error) are counted and skipped: the point is to keep sending.
func helperUDPBlast(local, remote string, count, size, seconds int) error {
	la, err := net.ResolveUDPAddr("udp4", local)
	if err != nil {
		return fmt.Errorf("local %s: %w", local, err)
	}
	ra, err := net.ResolveUDPAddr("udp4", remote)
	if err != nil {
		return fmt.Errorf("remote %s: %w", remote, err)
	}
	c, err := net.ListenUDP("udp4", la)
	if err != nil {
		return fmt.Errorf("listen %s: %w", local, err)
	}
	defer c.Close()
	buf := make([]byte, size)
	end := time.Now().Add(time.Duration(seconds) * time.Second)
	sent := 0
	for i := 0; i < count && time.Now().Before(end); i++ {
		if _, err := c.WriteToUDP(buf, ra); err == nil {
			sent++
		} else if i%1000 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	fmt.Printf("sent=%d\n", sent)
	return nil
}
