package packet

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// udp4 is an IPv4/UDP packet of size bytes from src to dst, with DF set
// when df.
func udp4(src, dst string, size int, df bool) []byte {
	b := make([]byte, size)
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(size))
	if df {
		b[6] = 0x40
	}
	b[8], b[9] = 64, ProtoUDP
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:12], checksum(0, b[:20]))
	binary.BigEndian.PutUint16(b[20:22], 5353)
	binary.BigEndian.PutUint16(b[22:24], 53)
	binary.BigEndian.PutUint16(b[24:26], uint16(size-20))
	return b
}

func udp6(src, dst string, size int) []byte {
	b := make([]byte, size)
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:6], uint16(size-40))
	b[6], b[7] = ProtoUDP, 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(b[8:24], s[:])
	copy(b[24:40], d[:])
	binary.BigEndian.PutUint16(b[40:42], 5353)
	binary.BigEndian.PutUint16(b[42:44], 53)
	return b
}

func TestAppendTooBigV4(t *testing.T) {
	pkt := udp4("198.19.77.10", "10.8.0.2", 1500, true)
	gw := netip.MustParseAddr("10.8.0.1")
	out, ok := AppendTooBig([]byte("keep"), pkt, 1350, gw)
	if !ok {
		t.Fatal("no error for a DF packet")
	}
	if string(out[:4]) != "keep" {
		t.Fatal("dst prefix overwritten")
	}
	e := out[4:]
	var info Info
	if err := Parse(e, &info); err != nil {
		t.Fatalf("error does not parse: %v", err)
	}
	if info.Src != gw || info.Dst != netip.MustParseAddr("198.19.77.10") || info.Proto != ProtoICMP || info.ICMPType != 3 || e[21] != 4 {
		t.Fatalf("error = %+v code %d", info, e[21])
	}
	if len(e) != maxErrorV4 || len(e) != int(binary.BigEndian.Uint16(e[2:4])) {
		t.Fatalf("error of %d bytes, total length %d; want %d (quote as much as fits)", len(e), binary.BigEndian.Uint16(e[2:4]), maxErrorV4)
	}
	if got := binary.BigEndian.Uint16(e[26:28]); got != 1350 {
		t.Fatalf("next-hop MTU = %d, want 1350", got)
	}
	if !refValid(0, e[:20]) || !refValid(0, e[20:]) {
		t.Fatal("bad IP or ICMP checksum")
	}
	// A packet shorter than the room is quoted whole.
	small := udp4("198.19.77.10", "10.8.0.2", 101, true)
	if e, ok := AppendTooBig(nil, small, 68, gw); !ok || len(e) != 28+len(small) || !bytes.Equal(e[28:], small) || !refValid(0, e[20:]) {
		t.Fatalf("error for a 101-byte packet: %d bytes, ok %v", len(e), ok)
	}
	if !bytes.Equal(e[28:], pkt[:len(e)-28]) {
		t.Fatal("the quote is not the start of the packet")
	}
}

func TestAppendTooBigV6(t *testing.T) {
	pkt := udp6("fd77::10", "fd00:8::2", 1500)
	gw := netip.MustParseAddr("fd00:8::1")
	e, ok := AppendTooBig(nil, pkt, 1000, gw) // clamped to 1280
	if !ok {
		t.Fatal("no error for an IPv6 packet")
	}
	var info Info
	if err := Parse(e, &info); err != nil {
		t.Fatalf("error does not parse: %v", err)
	}
	if info.Src != gw || info.Dst != netip.MustParseAddr("fd77::10") || info.Proto != ProtoICMPv6 || info.ICMPType != 2 {
		t.Fatalf("error = %+v", info)
	}
	if len(e) != maxErrorV6 {
		t.Fatalf("error of %d bytes, want %d (quote as much as fits)", len(e), maxErrorV6)
	}
	if got := binary.BigEndian.Uint32(e[44:48]); got != 1280 {
		t.Fatalf("MTU = %d, want 1280 (the IPv6 minimum)", got)
	}
	var ph [40]byte
	copy(ph[0:16], e[8:24])
	copy(ph[16:32], e[24:40])
	binary.BigEndian.PutUint32(ph[32:36], uint32(len(e)-40))
	ph[39] = ProtoICMPv6
	if !refValid(refSum(0, ph[:]), e[40:]) {
		t.Fatal("bad ICMPv6 checksum")
	}
}

// refSum and refValid are the Internet checksum (RFC 1071) written the
// plain way, apart from the package's: a test that checked the package's
// checksum with itself would pass whatever it computed.
func refSum(acc uint64, b []byte) uint64 {
	for i := 0; i < len(b); i += 2 {
		w := uint64(b[i]) << 8
		if i+1 < len(b) {
			w |= uint64(b[i+1])
		}
		acc += w
	}
	return acc
}

// refValid reports whether b (its checksum field filled in) sums to all
// ones on top of acc.
func refValid(acc uint64, b []byte) bool {
	acc = refSum(acc, b)
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return acc == 0xffff
}

// TestChecksum: the package's checksum against RFC 1071's worked example
// (carries that need folding) and odd lengths, against refValid.
func TestChecksum(t *testing.T) {
	if got := checksum(0, []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}); got != ^uint16(0xddf2) {
		t.Fatalf("RFC 1071 example: %#04x, want %#04x", got, ^uint16(0xddf2))
	}
	for _, n := range []int{0, 1, 2, 3, 20, 21, 1279} {
		b := make([]byte, n+2)
		for i := range b[2:] {
			b[2+i] = byte(0xff - i*7)
		}
		c := checksum(0, b)
		b[0], b[1] = byte(c>>8), byte(c)
		if !refValid(0, b) {
			t.Errorf("%d bytes: checksum %#04x does not verify", n, c)
		}
	}
}

func TestAppendTooBigRefuses(t *testing.T) {
	gw4, gw6 := netip.MustParseAddr("10.8.0.1"), netip.MustParseAddr("fd00:8::1")
	icmpErr, _ := AppendTooBig(nil, udp4("198.19.77.10", "10.8.0.2", 1500, true), 1350, gw4)
	frag := udp4("198.19.77.10", "10.8.0.2", 1500, true)
	binary.BigEndian.PutUint16(frag[6:8], 0x4000|100) // offset 800
	binary.BigEndian.PutUint16(icmpErr[6:8], 0x4000)  // with DF, so only its being an error refuses it
	for _, tc := range []struct {
		name string
		pkt  []byte
		from netip.Addr
	}{
		{"DF clear", udp4("198.19.77.10", "10.8.0.2", 1500, false), gw4},
		{"an ICMP error", icmpErr, gw4},
		{"non-first fragment", frag, gw4},
		{"multicast source", udp4("224.0.0.5", "10.8.0.2", 1500, true), gw4},
		{"unspecified source", udp6("::", "fd00:8::2", 1500), gw6},
		{"from of the other family", udp6("fd77::10", "fd00:8::2", 1500), gw4},
		{"garbage", []byte{0x45, 0, 0}, gw4},
	} {
		if out, ok := AppendTooBig(nil, tc.pkt, 1350, tc.from); ok || len(out) != 0 {
			t.Errorf("%s: an error was made", tc.name)
		}
	}
}

// TestAppendTooBigICMPTypes: no error about an ICMP error (RFC 1122
// 3.2.2: destination unreachable, source quench, redirect, time exceeded,
// parameter problem; RFC 4443 2.4(e): ICMPv6 types below 128), and an
// error about any other ICMP message (an echo that is too big).
func TestAppendTooBigICMPTypes(t *testing.T) {
	gw4, gw6 := netip.MustParseAddr("10.8.0.1"), netip.MustParseAddr("fd00:8::1")
	for typ := 0; typ < 256; typ++ {
		p4 := udp4("198.19.77.10", "10.8.0.2", 1500, true)
		p4[9], p4[20] = ProtoICMP, byte(typ)
		isErr4 := typ == 3 || typ == 4 || typ == 5 || typ == 11 || typ == 12
		if _, ok := AppendTooBig(nil, p4, 1350, gw4); ok == isErr4 {
			t.Errorf("ICMP type %d: error made %v, want %v", typ, ok, !isErr4)
		}
		p6 := udp6("fd77::10", "fd00:8::2", 1500)
		p6[6], p6[40] = ProtoICMPv6, byte(typ)
		if _, ok := AppendTooBig(nil, p6, 1280, gw6); ok == (typ < 128) {
			t.Errorf("ICMPv6 type %d: error made %v, want %v", typ, ok, typ >= 128)
		}
	}
}

func FuzzAppendTooBig(f *testing.F) {
	f.Add(udp4("198.19.77.10", "10.8.0.2", 1500, true), 1350, true)
	f.Add(udp6("fd77::10", "fd00:8::2", 1400), 1300, false)
	f.Fuzz(func(t *testing.T, pkt []byte, mtu int, v4 bool) {
		from := netip.MustParseAddr("fd00:8::1")
		if v4 {
			from = netip.MustParseAddr("10.8.0.1")
		}
		e, ok := AppendTooBig(nil, pkt, mtu, from)
		if !ok {
			return
		}
		var info Info
		if err := Parse(e, &info); err != nil || info.Src != from || len(e) > maxErrorV6 {
			t.Fatalf("error %x: %v %+v", e, err, info)
		}
	})
}
