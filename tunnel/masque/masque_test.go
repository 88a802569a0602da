package masque

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/netip"
	"slices"
	"testing"
)

func TestPacket(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
		want []byte
		ok   bool
	}{
		{"context 0", []byte{0, 0x45, 1}, []byte{0x45, 1}, true},
		{"context 0, two-byte varint", []byte{0x40, 0, 0x45}, []byte{0x45}, true},
		{"other context", []byte{2, 0x45}, nil, false},
		{"empty packet", []byte{0}, nil, false},
		{"empty datagram", nil, nil, false},
		{"truncated varint", []byte{0x40}, nil, false},
	} {
		got, ok := Packet(tc.in)
		if ok != tc.ok || !bytes.Equal(got, tc.want) {
			t.Errorf("%s: Packet(%x) = %x, %v; want %x, %v", tc.name, tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestCapsuleRoundTrip(t *testing.T) {
	addrs := []Address{
		{0, netip.MustParsePrefix("10.8.0.2/32")},
		{7, netip.MustParsePrefix("fd00:8::2/128")},
	}
	routes := Routes([]netip.Prefix{netip.MustParsePrefix("192.168.77.0/24"), netip.MustParsePrefix("::/0")})
	var stream []byte
	stream = AppendCapsule(stream, CapsuleAddressAssign, AppendAddresses(nil, addrs))
	stream = AppendCapsule(stream, CapsuleRouteAdvertisement, AppendRoutes(nil, routes))
	stream = AppendCapsule(stream, 0x29*7+0x17, []byte("grease")) // unknown: skipped by the reader's caller
	r := bufio.NewReader(bytes.NewReader(stream))
	typ, v, err := ReadCapsule(r, nil)
	if err != nil || typ != CapsuleAddressAssign {
		t.Fatalf("first capsule: %#x %v", typ, err)
	}
	got, err := ParseAddresses(v, false)
	if err != nil || !slices.Equal(got, addrs) {
		t.Fatalf("addresses = %v, %v; want %v", got, err, addrs)
	}
	typ, v, err = ReadCapsule(r, nil)
	if err != nil || typ != CapsuleRouteAdvertisement {
		t.Fatalf("second capsule: %#x %v", typ, err)
	}
	gr, err := ParseRoutes(v)
	if err != nil || !slices.Equal(gr, routes) {
		t.Fatalf("routes = %v, %v; want %v", gr, err, routes)
	}
	if typ, _, err = ReadCapsule(r, nil); err != nil || typ != 0x29*7+0x17 {
		t.Fatalf("third capsule: %#x %v", typ, err)
	}
	if _, _, err = ReadCapsule(r, nil); err != io.EOF {
		t.Fatalf("at the end: %v, want io.EOF", err)
	}
}

func TestReadCapsuleBounds(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"length past MaxCapsule", AppendCapsule(nil, 1, make([]byte, MaxCapsule+1))[:8]},
		{"truncated value", []byte{1, 5, 0, 0}},
		{"truncated length", []byte{1, 0x40}},
	} {
		_, _, err := ReadCapsule(bufio.NewReader(bytes.NewReader(tc.in)), nil)
		if !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err = %v, want ErrFormat", tc.name, err)
		}
	}
}

func TestParseAddressesRejects(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		request bool
	}{
		{"version 5", []byte{0, 5, 1, 2, 3, 4, 32}, false},
		{"truncated v4", []byte{0, 4, 1, 2, 3}, false},
		{"no prefix length", []byte{0, 4, 1, 2, 3, 4}, false},
		{"prefix past 32", []byte{0, 4, 1, 2, 3, 4, 33}, false},
		{"host bits set", []byte{0, 4, 10, 8, 0, 2, 24}, false},
		{"request ID 0 in a request", []byte{0, 4, 0, 0, 0, 0, 32}, true},
		{"empty request", nil, true},
	} {
		if _, err := ParseAddresses(tc.in, tc.request); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err = %v, want ErrFormat", tc.name, err)
		}
	}
}

func TestParseRoutesRejects(t *testing.T) {
	v4 := func(a, b string, proto uint8) Route {
		return Route{netip.MustParseAddr(a), netip.MustParseAddr(b), proto}
	}
	for _, tc := range []struct {
		name   string
		routes []Route
	}{
		{"start after end", []Route{v4("10.0.0.9", "10.0.0.1", 0)}},
		{"overlap", []Route{v4("10.0.0.0", "10.0.0.9", 0), v4("10.0.0.5", "10.0.0.20", 0)}},
		{"descending", []Route{v4("10.0.1.0", "10.0.1.9", 0), v4("10.0.0.0", "10.0.0.9", 0)}},
		{"protocols descending", []Route{v4("10.0.0.0", "10.0.0.9", 17), v4("10.0.1.0", "10.0.1.9", 6)}},
		{"v6 before v4", []Route{{netip.MustParseAddr("::"), netip.MustParseAddr("::1"), 0}, v4("10.0.0.0", "10.0.0.9", 0)}},
	} {
		if _, err := ParseRoutes(AppendRoutes(nil, tc.routes)); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: err = %v, want ErrFormat", tc.name, err)
		}
	}
	if _, err := ParseRoutes([]byte{4, 10, 0, 0, 0, 10, 0, 0}); !errors.Is(err, ErrFormat) {
		t.Errorf("truncated route: err = %v, want ErrFormat", err)
	}
}

func TestRoutesMergesAndOrders(t *testing.T) {
	p := netip.MustParsePrefix
	got := Routes([]netip.Prefix{p("fd00::/64"), p("10.0.1.0/24"), p("10.0.0.0/24"), p("10.0.0.128/25"), p("192.168.0.0/16"), p("::ffff:172.16.0.0/108")})
	want := []Route{
		{netip.MustParseAddr("10.0.0.0"), netip.MustParseAddr("10.0.1.255"), 0},
		{netip.MustParseAddr("172.16.0.0"), netip.MustParseAddr("172.31.255.255"), 0},
		{netip.MustParseAddr("192.168.0.0"), netip.MustParseAddr("192.168.255.255"), 0},
		{netip.MustParseAddr("fd00::"), netip.MustParseAddr("fd00::ffff:ffff:ffff:ffff"), 0},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Routes = %v\nwant %v", got, want)
	}
	if _, err := ParseRoutes(AppendRoutes(nil, got)); err != nil {
		t.Fatalf("own advertisement does not parse: %v", err)
	}
	full := Routes([]netip.Prefix{p("0.0.0.0/0"), p("::/0")})
	if len(full) != 2 || !Covers(full, netip.MustParseAddr("8.8.8.8"), 6) || !Covers(full, netip.MustParseAddr("2001:db8::1"), 17) {
		t.Fatalf("full tunnel = %v", full)
	}
	if Covers(got, netip.MustParseAddr("10.0.2.1"), 0) {
		t.Fatal("10.0.2.1 covered by 10.0.0.0-10.0.1.255")
	}
}

func FuzzReadCapsule(f *testing.F) {
	f.Add(AppendCapsule(nil, CapsuleAddressAssign, AppendAddresses(nil, []Address{{0, netip.MustParsePrefix("10.8.0.2/32")}})))
	f.Add([]byte{0x80, 0, 0, 1, 0x80, 0x01, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bufio.NewReader(bytes.NewReader(b))
		for i := 0; i < 64; i++ {
			_, v, err := ReadCapsule(r, nil)
			if err != nil {
				return
			}
			if len(v) > MaxCapsule {
				t.Fatalf("capsule of %d bytes", len(v))
			}
		}
	})
}

func FuzzParseAddresses(f *testing.F) {
	f.Add(AppendAddresses(nil, []Address{{3, netip.MustParsePrefix("fd00::/64")}}), true)
	f.Fuzz(func(t *testing.T, b []byte, request bool) {
		addrs, err := ParseAddresses(b, request)
		if err != nil {
			return
		}
		// What parses re-encodes to the same bytes (minimal varints aside).
		again, err := ParseAddresses(AppendAddresses(nil, addrs), request)
		if err != nil || !slices.Equal(again, addrs) {
			t.Fatalf("round trip of %v: %v %v", addrs, again, err)
		}
	})
}

func FuzzParseRoutes(f *testing.F) {
	f.Add(AppendRoutes(nil, Routes([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::/0")})))
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := ParseRoutes(b)
		if err != nil {
			return
		}
		if !bytes.Equal(AppendRoutes(nil, rs), b) {
			t.Fatalf("routes %v do not re-encode to their bytes", rs)
		}
	})
}

func FuzzPacket(f *testing.F) {
	f.Add([]byte{0, 0x45})
	f.Add([]byte{0x40, 0, 0x60})
	f.Fuzz(func(t *testing.T, b []byte) {
		if p, ok := Packet(b); ok && (len(p) == 0 || len(p) >= len(b)) {
			t.Fatalf("Packet(%x) = %x", b, p)
		}
	})
}
