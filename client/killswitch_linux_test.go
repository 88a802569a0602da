package client

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testenv"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// inNetns runs fn in a throwaway network namespace (testenv.InNetns).
func inNetns(t *testing.T, fn func()) {
	t.Helper()
	testenv.InNetns(t, "network namespaces and nftables", fn)
}

// veth makes a veth pair with addrs on name (the peer stays without
// addresses: nothing answers, packets just leave).
func veth(t *testing.T, name string, addrs ...string) {
	t.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = name
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: name + "p"}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	for _, n := range []string{name, name + "p"} {
		l, _ := netlink.LinkByName(n)
		if err := netlink.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	l, _ := netlink.LinkByName(name)
	for _, a := range addrs {
		p := netip.MustParsePrefix(a)
		n := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: n, Flags: unix.IFA_F_NODAD}); err != nil {
			t.Fatal(err)
		}
	}
}

// send tries to send one packet and returns the error of the send itself:
// a packet the output hook drops fails with EPERM at once. TCP uses a
// non-blocking connect (the SYN is the packet).
func send(network, dst string, port uint16, srcPort uint16, mark uint32) error {
	ap := netip.MustParseAddr(dst)
	fam := unix.AF_INET
	if ap.Is6() {
		fam = unix.AF_INET6
	}
	typ := unix.SOCK_DGRAM
	if network == "tcp" {
		typ = unix.SOCK_STREAM | unix.SOCK_NONBLOCK
	}
	fd, err := unix.Socket(fam, typ, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
			return err
		}
	}
	var sa unix.Sockaddr
	if ap.Is6() {
		sa = &unix.SockaddrInet6{Addr: ap.As16(), Port: int(port)}
		if srcPort != 0 {
			_ = unix.Bind(fd, &unix.SockaddrInet6{Port: int(srcPort)})
		}
	} else {
		sa = &unix.SockaddrInet4{Addr: ap.As4(), Port: int(port)}
		if srcPort != 0 {
			_ = unix.Bind(fd, &unix.SockaddrInet4{Port: int(srcPort)})
		}
	}
	if network == "tcp" {
		if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
			return err
		}
		return nil
	}
	return unix.Sendto(fd, []byte("x"), 0, sa)
}

// sawTCPSyn runs fn and reports whether a TCP packet to port left through
// link ifname's peer (captured with an AF_PACKET socket on the peer): a
// dropped SYN gives the connecting socket no error, so the wire decides.
func sawTCPSyn(t *testing.T, ifname string, port uint16, fn func() error) (bool, error) {
	t.Helper()
	l, err := netlink.LinkByName(ifname + "p")
	if err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(htons(unix.ETH_P_ALL)))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.Attrs().Index}); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval((300 * time.Millisecond).Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	ferr := fn()
	buf := make([]byte, 2048)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return false, ferr // timeout: nothing more on the wire
		}
		p := buf[:n]
		switch {
		case n >= 24 && p[0]>>4 == 4 && p[9] == unix.IPPROTO_TCP:
			off := int(p[0]&0xf) * 4
			if n >= off+4 && binary.BigEndian.Uint16(p[off+2:]) == port {
				return true, ferr
			}
		case n >= 44 && p[0]>>4 == 6 && p[6] == unix.IPPROTO_TCP:
			if binary.BigEndian.Uint16(p[42:]) == port {
				return true, ferr
			}
		}
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// The kill switch in a namespace: what it lets out and what it drops
// (the thief's tries: another port to the gateway, an unmarked connection
// to the gateway, IPv6 on the LAN), atomic re-install (adoption), removal.
func TestKillSwitchKernel(t *testing.T) {
	inNetns(t, func() {
		veth(t, "lan0", "192.168.50.2/24", "2001:db8:50::2/64")
		veth(t, "sptun0", "10.9.0.2/24")
		// Static neighbours, so a SYN leaves at once instead of waiting
		// for an answer to ARP/ND that never comes.
		lan, _ := netlink.LinkByName("lan0")
		for _, ip := range []string{"192.168.50.1", "192.168.50.9", "2001:db8:50::1"} {
			n := &netlink.Neigh{LinkIndex: lan.Attrs().Index, State: netlink.NUD_PERMANENT, IP: net.ParseIP(ip),
				HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
			if err := netlink.NeighAdd(n); err != nil {
				t.Fatal(err)
			}
		}
		if lo, err := netlink.LinkByName("lo"); err == nil {
			_ = netlink.LinkSetUp(lo)
		}
		const mark = 0x5350
		spec := newKillSpec("sptun0", mark, []string{"192.168.50.1:8443", "[2001:db8:50::1]:8443"}, nil)
		type probe struct {
			name, network, dst string
			port, src          uint16
			mark               uint32
			allowed            bool
		}
		probes := []probe{
			{"LAN udp", "udp", "192.168.50.1", 53, 0, 0, false},
			{"LAN v6 udp", "udp", "2001:db8:50::1", 53, 0, 0, false},
			{"through the TUN", "udp", "10.9.0.1", 53, 0, 0, true},
			{"loopback", "udp", "127.0.0.1", 9, 0, 0, true},
			{"gateway, marked", "tcp", "192.168.50.1", 8443, 0, mark, true},
			{"gateway v6, marked", "tcp", "2001:db8:50::1", 8443, 0, mark, true},
			{"gateway, unmarked", "tcp", "192.168.50.1", 8443, 0, 0, false},
			{"gateway, marked, other port", "tcp", "192.168.50.1", 22, 0, mark, false},
			{"other host, marked, gateway port", "tcp", "192.168.50.9", 8443, 0, mark, false},
			{"marked DNS with a literal gateway", "udp", "192.168.50.1", 53, 0, mark, false},
			{"DHCP client", "udp", "192.168.50.1", 67, 68, 0, true},
			{"DHCP-looking, wrong source port", "udp", "192.168.50.1", 67, 6800, 0, false},
		}
		check := func(when string, probes []probe, on bool) {
			t.Helper()
			for _, p := range probes {
				var err error
				var blocked bool
				if p.network == "tcp" {
					var seen bool
					seen, err = sawTCPSyn(t, "lan0", p.port, func() error { return send(p.network, p.dst, p.port, p.src, p.mark) })
					blocked = !seen
				} else {
					err = send(p.network, p.dst, p.port, p.src, p.mark)
					blocked = errors.Is(err, syscall.EPERM)
				}
				if err != nil && !blocked {
					t.Errorf("%s: %s: unexpected error %v", when, p.name, err)
				}
				if want := on && !p.allowed; blocked != want {
					t.Errorf("%s: %s: blocked=%v, want %v (%v)", when, p.name, blocked, want, err)
				}
			}
		}
		check("before", probes, false)
		if err := installKillSwitch(spec); err != nil {
			t.Fatal(err)
		}
		if ok, err := killSwitchExists(spec.Table); !ok || err != nil {
			t.Fatalf("exists = %v, %v", ok, err)
		}
		check("on", probes, true)
		if err := installKillSwitch(spec); err != nil { // adopt: replace in place
			t.Fatal(err)
		}
		check("re-installed", probes, true)
		// allow_lan: the LAN prefixes pass, the rest does not.
		spec.LAN = []netip.Prefix{netip.MustParsePrefix("192.168.50.0/24")}
		if err := installKillSwitch(spec); err != nil {
			t.Fatal(err)
		}
		check("allow_lan", []probe{
			{"LAN udp", "udp", "192.168.50.1", 53, 0, 0, true},
			{"LAN v6 udp", "udp", "2001:db8:50::1", 53, 0, 0, false},
		}, true)
		// A gateway by name: marked DNS passes.
		named := newKillSpec("sptun0", mark, []string{"gw.example:8443"}, nil)
		if err := installKillSwitch(named); err != nil {
			t.Fatal(err)
		}
		check("named gateway", []probe{
			{"marked DNS", "udp", "192.168.50.1", 53, 0, mark, true},
			{"unmarked DNS", "udp", "192.168.50.1", 53, 0, 0, false},
			{"marked, any address, gateway port", "tcp", "192.168.50.9", 8443, 0, mark, true},
		}, true)
		if err := removeKillSwitch(spec.Table); err != nil {
			t.Fatal(err)
		}
		if err := removeKillSwitch(spec.Table); err != nil {
			t.Fatalf("second remove: %v", err)
		}
		if ok, _ := killSwitchExists(spec.Table); ok {
			t.Fatal("table still there")
		}
		check("removed", probes, false)
	})
}
