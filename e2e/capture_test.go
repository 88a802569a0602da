package e2e

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// helperCapture watches the packets leaving interface ifname (an AF_PACKET
// socket, no tcpdump) for ms milliseconds and sorts them: "gw" is the
// client's own TCP connection to the gateway endpoint gw (addr:port), "nd"
// neighbour/router discovery and DHCP, anything else IP is a "leak" (the
// first few are printed as leak_pkt=src>dst/proto). ARP is not IP and is
// ignored. With only set, a leak counts only when it goes to that address.
// It prints "ready" once capturing and "leaks=N gw=N nd=N" at the end.
func helperCapture(ifname, gw string, ms int, only string) error {
	gwAP, err := netip.ParseAddrPort(gw)
	if err != nil {
		return fmt.Errorf("gateway %q: %w", gw, err)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	proto := uint16(unix.ETH_P_ALL)
	proto = proto<<8 | proto>>8
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(proto))
	if err != nil {
		return fmt.Errorf("packet socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		return fmt.Errorf("bind %s: %w", ifname, err)
	}
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	fmt.Println("ready")
	end := time.Now().Add(time.Duration(ms) * time.Millisecond)
	var leaks, gws, nd int
	var shown []string
	buf := make([]byte, 65536)
	for time.Now().Before(end) {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); !ok || ll.Pkttype != unix.PACKET_OUTGOING {
			continue
		}
		p := buf[:n]
		var src, dst netip.Addr
		var l4 byte
		var payload []byte
		switch {
		case n >= 20 && p[0]>>4 == 4:
			src, _ = netip.AddrFromSlice(p[12:16])
			dst, _ = netip.AddrFromSlice(p[16:20])
			l4, payload = p[9], p[int(p[0]&0xf)*4:]
		case n >= 40 && p[0]>>4 == 6:
			src, _ = netip.AddrFromSlice(p[8:24])
			dst, _ = netip.AddrFromSlice(p[24:40])
			l4, payload = p[6], p[40:]
		default:
			continue // ARP and other non-IP
		}
		port := func(off int) uint16 {
			if len(payload) < off+2 {
				return 0
			}
			return binary.BigEndian.Uint16(payload[off:])
		}
		switch {
		case l4 == unix.IPPROTO_TCP && dst == gwAP.Addr() && port(2) == gwAP.Port():
			gws++
		case l4 == unix.IPPROTO_ICMPV6 && len(payload) > 0 && payload[0] >= 130 && payload[0] <= 143, // MLD, router and neighbour discovery
			l4 == unix.IPPROTO_UDP && (port(2) == 67 || port(2) == 547):
			nd++
		case only != "" && dst.String() != only:
		default:
			leaks++
			if len(shown) < 5 {
				shown = append(shown, fmt.Sprintf("%s>%s/%d", src, dst, l4))
			}
		}
	}
	if len(shown) > 0 {
		fmt.Printf("leak_pkt=%s\n", strings.Join(shown, ","))
	}
	fmt.Printf("leaks=%d gw=%d nd=%d\n", leaks, gws, nd)
	return nil
}

// helperUDPAny sends one datagram to addr (IPv4 or IPv6) and prints
// "sent=1", or "send_error=..." when the laptop refuses to send it.
func helperUDPAny(addr, payload string) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		fmt.Printf("send_error=%s\n", strings.ReplaceAll(err.Error(), " ", "_"))
		return nil
	}
	defer c.Close()
	if _, err := c.Write([]byte(payload)); err != nil {
		fmt.Printf("send_error=%s\n", strings.ReplaceAll(err.Error(), " ", "_"))
		return nil
	}
	fmt.Println("sent=1")
	return nil
}
