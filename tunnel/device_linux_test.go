package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testenv"
	"github.com/vishvananda/netlink"
)

// inNetns runs fn in a throwaway network namespace (testenv.InNetns).
func inNetns(t *testing.T, fn func()) {
	t.Helper()
	testenv.InNetns(t, "network namespaces and TUN devices", fn)
}

// checkGoroutines fails t if more goroutines than before remain after a
// grace period (the drivers' listener goroutines end shortly after Close).
func checkGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines leaked: %d > %d\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testDevName() string { return fmt.Sprintf("sptest%d", os.Getpid()%10000) }

// TestOpenDeviceErrors: bad arguments fail before the kernel is asked, and
// the message names the device as a person reads it: the kernel's
// template "sp%d" is shown as "spN (first free)", never with its verb.
func TestOpenDeviceErrors(t *testing.T) {
	tests := []struct {
		name, dev, driver string
		mtu               int
		want              string
	}{
		{"unknown driver", "sp0", "tap", 1400, `open TUN sp0: unknown driver "tap"`},
		{"empty name", "", "", 1400, `open TUN "": name must be 1..15 bytes`},
		{"long name", "abcdefghijklmnop", "", 1400, "name must be 1..15 bytes"},
		{"mtu low", "sp0", "", 100, "open TUN sp0: MTU 100 out of range"},
		{"mtu high", "sp0", "", 70000, "MTU 70000 out of range"},
		{"template, unknown driver", "sp%d", "tap", 1400, `open TUN spN (first free): unknown driver "tap"`},
		{"template, mtu", "sp%d", "", 100, "open TUN spN (first free): MTU 100"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := OpenDevice(tt.dev, tt.driver, tt.mtu)
			if err == nil {
				d.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "%") {
				t.Fatalf("error %q, want it to contain %q and no %%", err, tt.want)
			}
		})
	}
}

// udp4 builds an IPv4/UDP packet (UDP checksum 0 = none) at b[off:] and
// returns its length.
func udp4(b []byte, off int, src, dst netip.Addr, sport, dport uint16, payload []byte) int {
	p := b[off:]
	n := 20 + 8 + len(payload)
	clear(p[:28])
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:], uint16(n))
	p[8] = 64
	p[9] = 17
	s4, d4 := src.As4(), dst.As4()
	copy(p[12:16], s4[:])
	copy(p[16:20], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(p[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(p[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(p[20:], sport)
	binary.BigEndian.PutUint16(p[22:], dport)
	binary.BigEndian.PutUint16(p[24:], uint16(8+len(payload)))
	copy(p[28:], payload)
	return n
}

// TestOpenDeviceBusy: a TUN name another process (here: this one) holds
// says so and what to look at, not only the kernel's "device or resource
// busy" (a second gateway started by hand beside the service).
func TestOpenDeviceBusy(t *testing.T) {
	inNetns(t, func() {
		name := testDevName()
		d, err := OpenDevice(name, DriverWireguard, 1420)
		if err != nil {
			t.Errorf("open: %v", err)
			return
		}
		defer d.Close()
		d2, err := OpenDevice(name, DriverWireguard, 1420)
		if err == nil {
			d2.Close()
			t.Skip("the kernel let a second process attach the TUN")
		}
		if !errors.Is(err, syscall.EBUSY) || !strings.Contains(err.Error(), "another process has "+name+" open: is a sallyport already running on it?") {
			t.Errorf("second open: %v", err)
		}
	})
}

// TestDeviceIO opens each driver in a private namespace, configures it with
// the netlink helpers, reads a UDP packet the kernel routes into it, writes
// a reply back and checks the socket gets it, then checks Close unblocks a
// pending Read and is idempotent.
func TestDeviceIO(t *testing.T) {
	defer checkGoroutines(t, runtime.NumGoroutine())
	for _, driver := range []string{DriverWireguard, DriverWater} {
		t.Run(driver, func(t *testing.T) {
			inNetns(t, func() { testDeviceIO(t, driver) })
		})
	}
}

func testDeviceIO(t *testing.T, driver string) {
	name := testDevName()
	d, err := OpenDevice(name, driver, 1420)
	if err != nil {
		t.Errorf("open: %v", err)
		return
	}
	defer d.Close()
	if d.Name() != name || d.MTU() != 1420 || d.BatchSize() < 1 {
		t.Errorf("name %q mtu %d batch %d", d.Name(), d.MTU(), d.BatchSize())
	}
	if driver == DriverWater && d.BatchSize() != 1 {
		t.Errorf("water batch size %d", d.BatchSize())
	}
	local := netip.MustParsePrefix("10.99.0.1/24")
	peer := netip.MustParseAddr("10.99.0.2")
	if err := LinkUp(name, 1400); err != nil {
		t.Error(err)
		return
	}
	if d.MTU() != 1400 {
		t.Errorf("MTU after LinkUp = %d", d.MTU())
	}
	if err := SetAddress(name, local); err != nil {
		t.Error(err)
		return
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(local.Addr().AsSlice()), Port: 0})
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	lport := uint16(conn.LocalAddr().(*net.UDPAddr).Port)
	if _, err := conn.WriteToUDP([]byte("ping"), &net.UDPAddr{IP: net.IP(peer.AsSlice()), Port: 9999}); err != nil {
		t.Error(err)
		return
	}

	b := NewBatch(max(d.BatchSize(), 8), Headroom+65535)
	found := false
	deadline := time.Now().Add(5 * time.Second)
	for !found && time.Now().Before(deadline) {
		n, err := d.Read(b.Bufs, b.Sizes, Headroom)
		if err != nil {
			t.Errorf("read: %v", err)
			return
		}
		for i := range n {
			p := b.Bufs[i][Headroom : Headroom+b.Sizes[i]]
			if len(p) >= 32 && p[0]>>4 == 4 && p[9] == 17 && netip.AddrFrom4([4]byte(p[16:20])) == peer &&
				binary.BigEndian.Uint16(p[22:]) == 9999 && string(p[28:32]) == "ping" {
				found = true
			}
		}
	}
	if !found {
		t.Error("UDP packet not read from the device")
		return
	}

	// Reply through Write, twice in one batch.
	w := NewBatch(2, Headroom+128)
	for i := range 2 {
		w.Sizes[i] = udp4(w.Bufs[i], Headroom, peer, local.Addr(), 9999, lport, []byte(fmt.Sprintf("pong%d", i)))
	}
	bufs := [][]byte{w.Bufs[0][:Headroom+w.Sizes[0]], w.Bufs[1][:Headroom+w.Sizes[1]]}
	if n, err := d.Write(bufs, Headroom); err != nil || n != 2 {
		t.Errorf("write: n=%d err=%v", n, err)
		return
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := map[string]bool{}
	buf := make([]byte, 64)
	for range 2 {
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			t.Errorf("socket read: %v", err)
			return
		}
		got[string(buf[:n])] = true
	}
	if !got["pong0"] || !got["pong1"] {
		t.Errorf("socket got %v", got)
	}

	// Close unblocks a pending Read and is idempotent.
	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := d.Read(b.Bufs, b.Sizes, Headroom); err != nil {
				errc <- err
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	if err := d.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("read after close: %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Close did not unblock Read")
	}
	if _, err := d.Write(bufs, Headroom); err == nil {
		t.Error("write after close succeeded")
	}
}

func TestNetlinkHelpers(t *testing.T) {
	inNetns(t, func() {
		name := testDevName()
		d, err := OpenDevice(name, DriverWireguard, 1400)
		if err != nil {
			t.Errorf("open: %v", err)
			return
		}
		defer d.Close()
		if err := LinkUp(name, 0); err != nil {
			t.Error(err)
			return
		}
		a1, a2 := netip.MustParsePrefix("10.98.0.2/24"), netip.MustParsePrefix("10.97.0.2/16")
		steps := []struct {
			name string
			fn   func() error
		}{
			{"set address", func() error { return SetAddress(name, a1) }},
			{"set address again", func() error { return SetAddress(name, a1) }},
			{"replace route", func() error { return replaceRoute(name, netip.MustParsePrefix("192.168.77.0/24")) }},
			{"replace route again", func() error { return replaceRoute(name, netip.MustParsePrefix("192.168.77.0/24")) }},
			{"non-canonical route", func() error { return replaceRoute(name, netip.MustParsePrefix("172.16.5.9/16")) }},
			{"default route", func() error { return replaceRoute(name, netip.MustParsePrefix("0.0.0.0/0")) }},
			{"change address", func() error { return SetAddress(name, a2) }},
			{"delete route", func() error { return deleteRoute(name, netip.MustParsePrefix("0.0.0.0/0")) }},
			{"delete missing route", func() error { return deleteRoute(name, netip.MustParsePrefix("0.0.0.0/0")) }},
			{"delete on missing link", func() error { return deleteRoute("nosuchlink0", netip.MustParsePrefix("10.0.0.0/8")) }},
		}
		for _, s := range steps {
			if err := s.fn(); err != nil {
				t.Errorf("%s: %v", s.name, err)
				return
			}
		}
		routes, err := linkRoutes(name)
		if err != nil {
			t.Error(err)
			return
		}
		var v4 []string
		for _, r := range routes {
			if r.Addr().Is4() {
				v4 = append(v4, r.String())
			}
		}
		slices.Sort(v4)
		want := []string{"10.97.0.0/16", "172.16.0.0/16", "192.168.77.0/24"}
		if !slices.Equal(v4, want) {
			t.Errorf("routes %v, want %v", v4, want)
		}
		// Errors name the link.
		for _, err := range []error{
			LinkUp("nosuchlink0", 0),
			SetAddress("nosuchlink0", a1),
			replaceRoute("nosuchlink0", a1),
			SetAddress(name, netip.Prefix{}),
		} {
			if err == nil {
				t.Error("no error for missing link / bad prefix")
			}
		}
		if _, err := linkRoutes("nosuchlink0"); err == nil {
			t.Error("LinkRoutes on missing link: no error")
		}
	})
}

// TestSetAddressSameSubnet changes the address to another one in the same
// subnet, as a laptop does when the gateway hands out a different address on
// reconnect. With IPv4's default promote_secondaries=0, adding the new
// address as a secondary and then deleting the old primary took the new one
// with it and flushed the link's routes: the tunnel had no IPv4 at all.
func TestSetAddressSameSubnet(t *testing.T) {
	tests := []struct {
		name   string
		family int
		a, b   netip.Prefix
		route  netip.Prefix
	}{
		{"ipv4", netlink.FAMILY_V4, netip.MustParsePrefix("10.98.0.2/24"), netip.MustParsePrefix("10.98.0.7/24"), netip.MustParsePrefix("192.168.77.0/24")},
		{"ipv6", netlink.FAMILY_V6, netip.MustParsePrefix("fd00:98::2/64"), netip.MustParsePrefix("fd00:98::7/64"), netip.MustParsePrefix("fd00:77::/64")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inNetns(t, func() {
				name := testDevName()
				d, err := OpenDevice(name, DriverWireguard, 1400)
				if err != nil {
					t.Errorf("open: %v", err)
					return
				}
				defer d.Close()
				if err := LinkUp(name, 0); err != nil {
					t.Error(err)
					return
				}
				// A, a route via the link, then B; then back to A.
				for i, p := range []netip.Prefix{tt.a, tt.b, tt.a} {
					if err := SetAddress(name, p); err != nil {
						t.Errorf("set address %s: %v", p, err)
						return
					}
					if i == 0 {
						if err := replaceRoute(name, tt.route); err != nil {
							t.Error(err)
							return
						}
					}
					got := linkAddrs(t, name, tt.family)
					if !slices.Equal(got, []netip.Prefix{p}) {
						t.Errorf("after setting %s: addresses %v, want only %s", p, got, p)
					}
					routes, err := linkRoutes(name)
					if err != nil {
						t.Error(err)
						return
					}
					if !slices.Contains(routes, tt.route) {
						t.Errorf("after setting %s: route %s via the link gone (routes %v)", p, tt.route, routes)
					}
				}
			})
		})
	}
}

// linkAddrs lists link name's addresses of family, without link-local ones.
func linkAddrs(t *testing.T, name string, family int) []netip.Prefix {
	t.Helper()
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := netlink.AddrList(link, family)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && !p.Addr().IsLinkLocalUnicast() {
			out = append(out, p)
		}
	}
	return out
}

// TestValidateVnetAgreesWithKernel: every header ValidateVnet accepts, the
// kernel takes too. A header the kernel refuses (EINVAL) that passed would
// lose its packet as a TUN write error, uncounted, instead of being
// counted as malformed (the partial checksum beyond the packet did).
func TestValidateVnetAgreesWithKernel(t *testing.T) {
	inNetns(t, func() {
		name := testDevName()
		d, err := OpenDevice(name, DriverWireguard, 1500)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		if err := LinkUp(name, 1500); err != nil {
			t.Fatal(err)
		}
		v, ok := AsVnet(d)
		if !ok {
			t.Fatal("the wireguard TUN has no offloads")
		}
		for _, c := range vnetCases() {
			if ValidateVnet(c.h, c.pkt, 1500) != nil {
				continue
			}
			buf := make([]byte, Headroom+len(c.pkt))
			c.h.Encode(buf[Headroom-VnetHdrLen:])
			copy(buf[Headroom:], c.pkt)
			if err := v.WriteVnet(buf, Headroom); err != nil {
				t.Errorf("%s: ValidateVnet accepts it, the kernel refuses it: %v", c.name, err)
			}
		}
	})
}
