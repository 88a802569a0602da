package packet

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// v4 builds an IPv4 packet with the given protocol, flags/offset word and
// transport payload; ihl in 32-bit words.
func v4(proto uint8, fragWord uint16, ihl int, l4 []byte) []byte {
	h := make([]byte, ihl*4)
	h[0] = 0x40 | byte(ihl)
	binary.BigEndian.PutUint16(h[2:4], uint16(len(h)+len(l4)))
	binary.BigEndian.PutUint16(h[6:8], fragWord)
	h[8] = 64
	h[9] = proto
	copy(h[12:16], []byte{10, 8, 0, 2})
	copy(h[16:20], []byte{192, 168, 77, 10})
	return append(h, l4...)
}

// v6 builds an IPv6 packet; ext is a chain of already-encoded extension
// headers whose first next-header byte is filled in by the caller.
func v6(next uint8, ext []byte, l4 []byte) []byte {
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:6], uint16(len(ext)+len(l4)))
	h[6] = next
	h[7] = 64
	copy(h[8:24], netip.MustParseAddr("fd00::2").AsSlice())
	copy(h[24:40], netip.MustParseAddr("fd00:77::10").AsSlice())
	return append(append(h, ext...), l4...)
}

func ports(src, dst uint16, n int) []byte {
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b[0:2], src)
	binary.BigEndian.PutUint16(b[2:4], dst)
	return b
}

func icmp(typ uint8, id uint16) []byte {
	b := make([]byte, 8)
	b[0] = typ
	binary.BigEndian.PutUint16(b[4:6], id)
	return b
}

// ext builds one extension header of total length n (multiple of 8).
func ext(next uint8, n int) []byte {
	b := make([]byte, n)
	b[0] = next
	b[1] = byte(n/8 - 1)
	return b
}

func fragHdr(next uint8, off uint16, more bool) []byte {
	b := make([]byte, 8)
	b[0] = next
	w := off &^ 7
	if more {
		w |= 1
	}
	binary.BigEndian.PutUint16(b[2:4], w)
	return b
}

func ahHdr(next uint8) []byte { // 12-byte AH (payload len field = 1)
	b := make([]byte, 12)
	b[0] = next
	b[1] = 1
	return b
}

var (
	src4 = netip.MustParseAddr("10.8.0.2")
	dst4 = netip.MustParseAddr("192.168.77.10")
	src6 = netip.MustParseAddr("fd00::2")
	dst6 = netip.MustParseAddr("fd00:77::10")
)

func TestParse(t *testing.T) {
	many := []byte{}
	for i := 0; i < 8; i++ {
		many = append(many, ext(protoDestOpts, 8)...)
	}
	many[len(many)-8] = ProtoUDP
	tooMany := append(append([]byte{}, ext(protoDestOpts, 8)...), many...)

	tests := []struct {
		name string
		pkt  []byte
		want Info
		err  error
	}{
		{"v4 tcp", v4(ProtoTCP, 0, 5, ports(40000, 22, 20)),
			Info{Version: 4, Proto: ProtoTCP, Src: src4, Dst: dst4, SrcPort: 40000, DstPort: 22}, nil},
		{"v4 udp with options", v4(ProtoUDP, 0, 7, ports(5353, 53, 8)),
			Info{Version: 4, Proto: ProtoUDP, Src: src4, Dst: dst4, SrcPort: 5353, DstPort: 53}, nil},
		{"v4 DF set is not a fragment", v4(ProtoUDP, 0x4000, 5, ports(1, 2, 8)),
			Info{Version: 4, Proto: ProtoUDP, Src: src4, Dst: dst4, SrcPort: 1, DstPort: 2}, nil},
		{"v4 echo request", v4(ProtoICMP, 0, 5, icmp(8, 0x1234)),
			Info{Version: 4, Proto: ProtoICMP, Src: src4, Dst: dst4, SrcPort: 0x1234, DstPort: 0x1234, ICMPType: 8}, nil},
		{"v4 echo reply", v4(ProtoICMP, 0, 5, icmp(0, 7)),
			Info{Version: 4, Proto: ProtoICMP, Src: src4, Dst: dst4, SrcPort: 7, DstPort: 7}, nil},
		{"v4 unreachable no id", v4(ProtoICMP, 0, 5, icmp(3, 7)),
			Info{Version: 4, Proto: ProtoICMP, Src: src4, Dst: dst4, ICMPType: 3}, nil},
		{"v4 icmpv6 type ignored on v4", v4(ProtoICMPv6, 0, 5, icmp(128, 7)),
			Info{Version: 4, Proto: ProtoICMPv6, Src: src4, Dst: dst4}, nil},
		{"v4 gre", v4(47, 0, 5, []byte{1, 2}),
			Info{Version: 4, Proto: 47, Src: src4, Dst: dst4}, nil},
		{"v4 first fragment", v4(ProtoUDP, 0x2000, 5, ports(1000, 53, 16)),
			Info{Version: 4, Proto: ProtoUDP, Src: src4, Dst: dst4, SrcPort: 1000, DstPort: 53, Fragment: true}, nil},
		{"v4 later fragment", v4(ProtoUDP, 0x2000|3, 5, ports(1000, 53, 16)),
			Info{Version: 4, Proto: ProtoUDP, Src: src4, Dst: dst4, Fragment: true, FragOffset: 24}, nil},
		{"v4 last fragment", v4(ProtoTCP, 185, 5, []byte{1}),
			Info{Version: 4, Proto: ProtoTCP, Src: src4, Dst: dst4, Fragment: true, FragOffset: 1480}, nil},
		{"v4 trailing bytes ignored", append(v4(ProtoUDP, 0, 5, ports(1, 2, 8)), 9, 9, 9),
			Info{Version: 4, Proto: ProtoUDP, Src: src4, Dst: dst4, SrcPort: 1, DstPort: 2}, nil},
		{"v6 tcp", v6(ProtoTCP, nil, ports(40000, 443, 20)),
			Info{Version: 6, Proto: ProtoTCP, Src: src6, Dst: dst6, SrcPort: 40000, DstPort: 443}, nil},
		{"v6 echo", v6(ProtoICMPv6, nil, icmp(128, 99)),
			Info{Version: 6, Proto: ProtoICMPv6, Src: src6, Dst: dst6, SrcPort: 99, DstPort: 99, ICMPType: 128}, nil},
		{"v6 echo reply", v6(ProtoICMPv6, nil, icmp(129, 99)),
			Info{Version: 6, Proto: ProtoICMPv6, Src: src6, Dst: dst6, SrcPort: 99, DstPort: 99, ICMPType: 129}, nil},
		{"v6 icmpv4 type ignored", v6(ProtoICMP, nil, icmp(8, 99)),
			Info{Version: 6, Proto: ProtoICMP, Src: src6, Dst: dst6}, nil},
		{"v6 hbh+routing+dst+udp",
			v6(protoHopByHop, append(append(ext(protoRouting, 8), ext(protoDestOpts, 24)...), ext(ProtoUDP, 16)...), ports(1, 53, 8)),
			Info{Version: 6, Proto: ProtoUDP, Src: src6, Dst: dst6, SrcPort: 1, DstPort: 53}, nil},
		{"v6 AH then tcp", v6(protoAH, ahHdr(ProtoTCP), ports(5, 6, 20)),
			Info{Version: 6, Proto: ProtoTCP, Src: src6, Dst: dst6, SrcPort: 5, DstPort: 6}, nil},
		{"v6 first fragment", v6(protoFragment, fragHdr(ProtoUDP, 0, true), ports(7, 8, 8)),
			Info{Version: 6, Proto: ProtoUDP, Src: src6, Dst: dst6, SrcPort: 7, DstPort: 8, Fragment: true}, nil},
		{"v6 later fragment", v6(protoFragment, fragHdr(ProtoUDP, 1448, true), []byte{1, 2, 3}),
			Info{Version: 6, Proto: ProtoUDP, Src: src6, Dst: dst6, Fragment: true, FragOffset: 1448}, nil},
		// A non-first fragment carries data, not headers: what follows its
		// fragment header is never walked. Here the data looks like a
		// second fragment header (offset 0) and a TCP header to port 443;
		// read as headers it would make the fragment a first one with
		// ports, judged by a port rule instead of an all-ports one.
		{"v6 later fragment, data looks like a first fragment", v6(protoFragment, fragHdr(protoFragment, 8, false), append(fragHdr(ProtoTCP, 0, false), ports(40000, 443, 20)...)),
			Info{Version: 6, Proto: protoFragment, Src: src6, Dst: dst6, Fragment: true, FragOffset: 8}, nil},
		{"v6 later fragment, data looks like a long header chain", v6(protoFragment, fragHdr(protoDestOpts, 16, false), tooMany),
			Info{Version: 6, Proto: protoDestOpts, Src: src6, Dst: dst6, Fragment: true, FragOffset: 16}, nil},
		{"v6 first fragment, then a later one's header", v6(protoFragment, fragHdr(protoFragment, 0, true), append(fragHdr(ProtoTCP, 8, false), ports(40000, 443, 20)...)),
			Info{Version: 6, Proto: ProtoTCP, Src: src6, Dst: dst6, Fragment: true, FragOffset: 8}, nil},
		{"v6 atomic fragment", v6(protoFragment, fragHdr(ProtoTCP, 0, false), ports(1, 2, 20)),
			Info{Version: 6, Proto: ProtoTCP, Src: src6, Dst: dst6, SrcPort: 1, DstPort: 2, Fragment: true}, nil},
		{"v6 no next header", v6(59, nil, nil),
			Info{Version: 6, Proto: 59, Src: src6, Dst: dst6}, nil},
		{"v6 8 ext headers ok", v6(protoDestOpts, many, ports(3, 4, 8)),
			Info{Version: 6, Proto: ProtoUDP, Src: src6, Dst: dst6, SrcPort: 3, DstPort: 4}, nil},

		{"empty", nil, Info{}, ErrTruncated},
		{"bad version", []byte{0x50, 0, 0, 0}, Info{}, ErrVersion},
		{"v4 short", v4(ProtoTCP, 0, 5, nil)[:19], Info{}, ErrTruncated},
		{"v4 ihl 4", func() []byte { p := v4(ProtoUDP, 0, 5, ports(1, 2, 8)); p[0] = 0x44; return p }(), Info{}, ErrHeaderLen},
		{"v4 total < ihl", func() []byte { p := v4(ProtoUDP, 0, 6, ports(1, 2, 8)); p[3] = 20; p[2] = 0; return p }(), Info{}, ErrTotalLen},
		{"v4 total beyond buffer", v4(ProtoUDP, 0, 5, ports(1, 2, 8))[:27], Info{}, ErrTotalLen},
		{"v4 ihl beyond buffer", func() []byte { p := v4(ProtoUDP, 0, 5, ports(1, 2, 8)); p[0] = 0x4f; return p }(), Info{}, ErrTotalLen},
		{"v4 truncated tcp", v4(ProtoTCP, 0, 5, ports(1, 2, 19)), Info{}, ErrTruncated},
		{"v4 tiny first fragment", v4(ProtoTCP, 0x2000, 5, ports(1, 2, 8)), Info{}, ErrTruncated},
		{"v4 truncated udp", v4(ProtoUDP, 0, 5, ports(1, 2, 7)), Info{}, ErrTruncated},
		{"v4 truncated icmp", v4(ProtoICMP, 0, 5, icmp(8, 1)[:6]), Info{}, ErrTruncated},
		{"v6 short", v6(ProtoTCP, nil, nil)[:39], Info{}, ErrTruncated},
		{"v6 payload beyond buffer", v6(ProtoUDP, nil, ports(1, 2, 8))[:47], Info{}, ErrTotalLen},
		{"v6 truncated tcp", v6(ProtoTCP, nil, ports(1, 2, 10)), Info{}, ErrTruncated},
		{"v6 truncated icmp", v6(ProtoICMPv6, nil, []byte{128, 0, 0}), Info{}, ErrTruncated},
		{"v6 truncated ext", v6(protoHopByHop, []byte{6, 0, 0, 0}, nil), Info{}, ErrTruncated},
		{"v6 routing header split build", v6(protoRouting, ext(ProtoTCP, 8)[:2:2], append([]byte{0, 0, 0, 0, 0, 0}, ports(1, 2, 20)...)),
			Info{Version: 6, Proto: ProtoTCP, Src: src6, Dst: dst6, SrcPort: 1, DstPort: 2}, nil},
		{"v6 ext claims too long", func() []byte {
			p := v6(protoDestOpts, ext(ProtoUDP, 8), ports(1, 2, 8))
			p[41] = 5
			return p
		}(), Info{}, ErrTruncated},
		{"v6 too many ext", v6(protoDestOpts, tooMany, ports(3, 4, 8)), Info{}, ErrExtHeaders},
		{"v6 truncated frag hdr", v6(protoFragment, []byte{17, 0, 0, 1}, nil), Info{}, ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Info{Version: 99, SrcPort: 1234} // must be overwritten
			err := Parse(tt.pkt, &got)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				var pe *Error
				if !errors.As(err, &pe) || pe.Error()[:8] != "packet: " {
					t.Fatalf("error %v is not a *packet.Error", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if got != tt.want {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
			if got.NonFirstFragment() != (tt.want.FragOffset != 0) {
				t.Fatal("NonFirstFragment mismatch")
			}
			if s, ok := Src(tt.pkt); !ok || s != tt.want.Src {
				t.Fatalf("Src = %v %v", s, ok)
			}
			if d, ok := Dst(tt.pkt); !ok || d != tt.want.Dst {
				t.Fatalf("Dst = %v %v", d, ok)
			}
		})
	}
}

func TestSrcDstShort(t *testing.T) {
	for _, b := range [][]byte{nil, {0x45}, make([]byte, 19), append([]byte{0x60}, make([]byte, 38)...), {0x00, 1, 2}} {
		if _, ok := Src(b); ok {
			t.Errorf("Src(%x) ok", b)
		}
		if _, ok := Dst(b); ok {
			t.Errorf("Dst(%x) ok", b)
		}
	}
}

func TestParseNoAlloc(t *testing.T) {
	p4 := v4(ProtoTCP, 0, 5, ports(1, 2, 20))
	p6 := v6(protoHopByHop, ext(ProtoUDP, 8), ports(1, 2, 8))
	bad := p4[:10]
	var info Info
	n := testing.AllocsPerRun(100, func() {
		_ = Parse(p4, &info)
		_ = Parse(p6, &info)
		_ = Parse(bad, &info)
		_, _ = Src(p6)
		_, _ = Dst(p4)
	})
	if n != 0 {
		t.Fatalf("allocs = %v", n)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(v4(ProtoTCP, 0, 5, ports(1, 22, 20)))
	f.Add(v4(ProtoUDP, 0x2000|3, 6, ports(1, 53, 8)))
	f.Add(v4(ProtoICMP, 0, 5, icmp(8, 1)))
	f.Add(v6(ProtoICMPv6, nil, icmp(128, 1)))
	f.Add(v6(protoHopByHop, append(ext(protoFragment, 8), fragHdr(ProtoTCP, 0, true)...), ports(1, 2, 20)))
	f.Add(v6(protoAH, ahHdr(ProtoUDP), ports(1, 2, 8)))
	f.Add([]byte{0x45})
	f.Fuzz(func(t *testing.T, b []byte) {
		var info Info
		err := Parse(b, &info)
		if err != nil {
			if info.Version != 0 && info.Version != 4 && info.Version != 6 {
				t.Fatalf("bad version %d with error", info.Version)
			}
			return
		}
		if info.Version != 4 && info.Version != 6 {
			t.Fatalf("version %d", info.Version)
		}
		if info.Version == 4 && (!info.Src.Is4() || !info.Dst.Is4()) {
			t.Fatal("v4 packet with non-v4 addresses")
		}
		if info.Version == 6 && (!info.Src.Is6() || !info.Dst.Is6()) {
			t.Fatal("v6 packet with non-v6 addresses")
		}
		if s, ok := Src(b); !ok || s != info.Src {
			t.Fatalf("Src disagrees: %v %v", s, info.Src)
		}
		if d, ok := Dst(b); !ok || d != info.Dst {
			t.Fatalf("Dst disagrees: %v %v", d, info.Dst)
		}
		if info.FragOffset != 0 && (info.SrcPort != 0 || info.DstPort != 0 || info.ICMPType != 0 || !info.Fragment) {
			t.Fatalf("non-first fragment with transport info: %+v", info)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	for _, bc := range []struct {
		name string
		pkt  []byte
	}{
		{"v4tcp", v4(ProtoTCP, 0, 5, ports(1, 22, 1400))},
		{"v6udp-ext", v6(protoHopByHop, ext(ProtoUDP, 8), ports(1, 53, 100))},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var info Info
			b.ReportAllocs()
			for b.Loop() {
				if err := Parse(bc.pkt, &info); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestParseEdges: packets exactly at each length limit parse, one byte
// less fails with the right error and never panics (a mis-bounded check
// either rejects a valid packet or reads past the end).
func TestParseEdges(t *testing.T) {
	const noNext = 59                 // IPv6 "no next header"
	hdrOnly4 := v4(noNext, 0, 5, nil) // 20 bytes, total length 20
	hbh8 := v6(protoHopByHop, ext(noNext, 8), nil)
	hbh16 := v6(protoHopByHop, ext(noNext, 16), nil)
	frag8 := v6(protoFragment, fragHdr(noNext, 0, false), nil)
	ah8 := func() []byte { // 8-byte AH: payload length field 0
		b := make([]byte, 8)
		b[0] = noNext
		return v6(protoAH, b, nil)
	}()
	for _, tt := range []struct {
		name      string
		pkt       []byte
		wantErr   error
		wantProto uint8
	}{
		{"IPv4 header only, 20 bytes", hdrOnly4, nil, noNext},
		{"IPv4, 19 bytes", hdrOnly4[:19], errShort4, 0},
		{"hop-by-hop of exactly 8 bytes", hbh8, nil, noNext},
		{"hop-by-hop of exactly 16 bytes", hbh16, nil, noNext},
		{"fragment header of exactly 8 bytes", frag8, nil, noNext},
		{"AH of exactly 8 bytes", ah8, nil, noNext},
		{"hop-by-hop cut to 1 byte", trunc6(hbh8, 41), errExt6, 0},
		{"fragment header cut to 1 byte", trunc6(frag8, 41), errExt6, 0},
		{"AH cut to 1 byte", trunc6(ah8, 41), errExt6, 0},
		{"hop-by-hop of 16 cut to 8", trunc6(hbh16, 48), errExt6, 0},
		{"hop-by-hop cut to 7 bytes", trunc6(hbh8, 47), errExt6, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var info Info
			err := Parse(tt.pkt, &info)
			if !errors.Is(err, tt.wantErr) || (err == nil && info.Proto != tt.wantProto) {
				t.Fatalf("Parse = %v (proto %d), want %v (proto %d)", err, info.Proto, tt.wantErr, tt.wantProto)
			}
		})
	}
	// IPv4 total length equal to the header length: a header-only packet.
	b := v4(noNext, 0, 6, nil) // IHL 24, total 24
	var info Info
	if err := Parse(b, &info); err != nil {
		t.Fatalf("total length = IHL: %v", err)
	}
	binary.BigEndian.PutUint16(b[2:4], 23)
	if err := Parse(b, &info); !errors.Is(err, errTotalShort) {
		t.Fatalf("total length < IHL: %v", err)
	}
	// Src and Dst at exactly the fixed header's length.
	if a, ok := Src(hdrOnly4); !ok || a != src4 {
		t.Fatalf("Src of a 20-byte packet: %v %v", a, ok)
	}
	if a, ok := Dst(hdrOnly4); !ok || a != dst4 {
		t.Fatalf("Dst of a 20-byte packet: %v %v", a, ok)
	}
}

// trunc6 cuts an IPv6 packet to n bytes and makes its payload length say
// so; the capacity is n too, so a read past the end panics.
func trunc6(p []byte, n int) []byte {
	b := append([]byte(nil), p[:n]...)
	binary.BigEndian.PutUint16(b[4:6], uint16(n-40))
	return b[:n:n]
}
