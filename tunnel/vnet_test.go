package tunnel

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// superPacket builds a TCP or UDP packet over IPv4 or IPv6 with payload
// bytes of data, as a TUN with offloads hands it over (partial checksum:
// the pseudo-header sum in the checksum field).
func superPacket(v6 bool, proto byte, payload int) []byte {
	ipLen, l4 := 20, 20
	if v6 {
		ipLen = 40
	}
	if proto == 17 {
		l4 = 8
	}
	p := make([]byte, ipLen+l4+payload)
	if v6 {
		p[0] = 0x60
		binary.BigEndian.PutUint16(p[4:], uint16(len(p)-40))
		p[6], p[7] = proto, 64
		p[8], p[23] = 0xfd, 1
		p[24], p[39] = 0xfd, 2
	} else {
		p[0] = 0x45
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		binary.BigEndian.PutUint16(p[4:], 0x1000)
		p[6], p[8], p[9] = 0x40, 64, proto
		copy(p[12:], []byte{10, 8, 0, 2, 192, 168, 77, 10})
	}
	binary.BigEndian.PutUint16(p[ipLen:], 40000)
	binary.BigEndian.PutUint16(p[ipLen+2:], 5201)
	at := ipLen + 6
	if proto == 6 {
		binary.BigEndian.PutUint32(p[ipLen+4:], 0xfffff000) // wraps during the super-packet
		p[ipLen+12] = 5 << 4
		p[ipLen+13] = 0x18 | 0x80 // PSH|ACK|CWR
		at = ipLen + 16
	} else {
		binary.BigEndian.PutUint16(p[ipLen+4:], uint16(len(p)-ipLen))
	}
	for i := ipLen + l4; i < len(p); i++ {
		p[i] = byte(i * 7)
	}
	binary.BigEndian.PutUint16(p[at:], fold(pseudo(p, proto, len(p)-ipLen)))
	return p
}

func hdrFor(p []byte, proto byte, mss int) VnetHdr {
	ipLen := 20
	typ := byte(VnetGSOTCPv4)
	if p[0]>>4 == 6 {
		ipLen, typ = 40, VnetGSOTCPv6
	}
	off, l4 := uint16(16), 20
	if proto == 17 {
		off, l4, typ = 6, 8, VnetGSOUDPL4
	}
	return VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: typ, HdrLen: uint16(ipLen + l4), GSOSize: uint16(mss), CsumStart: uint16(ipLen), CsumOffset: off}
}

// validL4 checks a complete packet's transport checksum independently.
func validL4(p []byte) bool {
	ipLen, proto := 20, p[9]
	if p[0]>>4 == 6 {
		ipLen, proto = 40, p[6]
	}
	return fold(sum(pseudo(p, proto, len(p)-ipLen), p[ipLen:])) == 0xffff
}

func TestSegment(t *testing.T) {
	tests := []struct {
		name  string
		v6    bool
		proto byte
		mss   int
		data  int
	}{
		{"tcp4 3.5 segments", false, 6, 1448, 1448*3 + 700},
		{"tcp6 exact", true, 6, 1428, 1428 * 4},
		{"udp4", false, 17, 1200, 3000},
		{"udp6 one segment", true, 17, 1200, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := superPacket(tt.v6, tt.proto, tt.data)
			orig := append([]byte(nil), p...)
			h := hdrFor(p, tt.proto, tt.mss)
			if err := ValidateVnet(h, p, 1500); err != nil {
				t.Fatalf("valid packet refused: %v", err)
			}
			b := NewBatch(64, Headroom+1500)
			n, err := Segment(h, p, b.Bufs, b.Sizes, Headroom)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(p, orig) {
				t.Fatal("Segment modified its input")
			}
			want := (tt.data + tt.mss - 1) / tt.mss
			if n != want {
				t.Fatalf("%d segments, want %d", n, want)
			}
			hdr := int(h.HdrLen)
			var joined []byte
			for i := 0; i < n; i++ {
				s := b.Bufs[i][Headroom : Headroom+b.Sizes[i]]
				if !validL4(s) {
					t.Fatalf("segment %d: bad transport checksum", i)
				}
				if !tt.v6 {
					if fold(sum(0, s[:20])) != 0xffff {
						t.Fatalf("segment %d: bad IPv4 header checksum", i)
					}
					if id := binary.BigEndian.Uint16(s[4:]); id != 0x1000+uint16(i) {
						t.Fatalf("segment %d: IP ID %#x", i, id)
					}
				}
				if tt.proto == 6 {
					ipLen := hdr - 20
					if seq := binary.BigEndian.Uint32(s[ipLen+4:]); seq != 0xfffff000+uint32(i*tt.mss) {
						t.Fatalf("segment %d: seq %#x", i, seq)
					}
					flags := s[ipLen+13]
					if (flags&0x08 != 0) != (i == n-1) || (flags&0x80 != 0) != (i == 0) {
						t.Fatalf("segment %d: flags %#x (PSH only last, CWR only first)", i, flags)
					}
				}
				joined = append(joined, s[hdr:]...)
			}
			if !bytes.Equal(joined, orig[hdr:]) {
				t.Fatal("payload does not survive segmentation")
			}
		})
	}
}

func TestCompleteChecksum(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		p := superPacket(v6, 6, 300)
		h := hdrFor(p, 6, 0)
		h.GSOType, h.GSOSize = VnetGSONone, 0
		if err := ValidateVnet(h, p, 1500); err != nil {
			t.Fatal(err)
		}
		if validL4(p) {
			t.Fatal("partial checksum already valid?")
		}
		if err := CompleteChecksum(h, p); err != nil || !validL4(p) {
			t.Fatalf("v6=%v: %v, valid %v", v6, err, validL4(p))
		}
	}
}

// cut4 is the first n bytes of the IPv4 packet p with its total length
// saying n.
func cut4(p []byte, n int) []byte {
	q := bytes.Clone(p[:n])
	binary.BigEndian.PutUint16(q[2:], uint16(n))
	return q
}

// csumOnly is a header asking only for a partial checksum of an IPv4
// packet's TCP (6) or UDP (17) header.
func csumOnly(proto byte) VnetHdr {
	off := uint16(16)
	if proto == 17 {
		off = 6
	}
	return VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 20, CsumOffset: off}
}

// vnetCase is a virtio-net header from the network and the packet it came
// with: ok when ValidateVnet must accept it at MTU 1500.
type vnetCase struct {
	name string
	h    VnetHdr
	pkt  []byte
	ok   bool
}

// vnetCases are the headers a thief would send, each at the edge of a rule
// of ValidateVnet, and honest ones beside them.
func vnetCases() []vnetCase {
	p := superPacket(false, 6, 1448*3)
	p6 := superPacket(true, 6, 1428*3)
	u6 := superPacket(true, 17, 1400*3)
	icmp4 := superPacket(false, 17, 100)
	icmp4[9] = 1
	good := hdrFor(p, 6, 1448)
	mod := func(f func(*VnetHdr)) VnetHdr { h := good; f(&h); return h }
	return []vnetCase{
		{"good", good, p, true},
		{"plain", VnetHdr{}, p, true},
		{"unknown flag", mod(func(h *VnetHdr) { h.Flags |= 0x10 }), p, false},
		{"checksum offset", mod(func(h *VnetHdr) { h.CsumOffset = 6 }), p, false},
		{"checksum start", mod(func(h *VnetHdr) { h.CsumStart = 24 }), p, false},
		{"v6 type on v4", mod(func(h *VnetHdr) { h.GSOType = VnetGSOTCPv6 }), p, false},
		{"unknown type", mod(func(h *VnetHdr) { h.GSOType = 3 }), p, false},
		{"gso without csum", mod(func(h *VnetHdr) { h.Flags = 0 }), p, false},
		{"mss over mtu", mod(func(h *VnetHdr) { h.GSOSize = 1481 }), p, false},
		{"mss zero", mod(func(h *VnetHdr) { h.GSOSize = 0 }), p, false},
		{"too many segments", mod(func(h *VnetHdr) { h.GSOSize = 50 }), p, false},
		{"ecn ok", mod(func(h *VnetHdr) { h.GSOType |= VnetGSOECN }), p, true},
		{"length mismatch", good, p[:len(p)-1], false},
		{"udp type on tcp", mod(func(h *VnetHdr) { h.GSOType = VnetGSOUDPL4 }), p, false},
		// The thief's headers: each at the edge of what the kernel takes.
		{"segment exactly at the mtu", mod(func(h *VnetHdr) { h.GSOSize = 1460 }), p, true},
		{"segment one byte over the mtu", mod(func(h *VnetHdr) { h.GSOSize = 1461 }), p, false},
		{"64 segments", mod(func(h *VnetHdr) { h.GSOSize = 68 }), p, true}, // 64*68 >= 4344
		{"65 segments", mod(func(h *VnetHdr) { h.GSOSize = 67 }), p, false},
		{"header length at the packet's end", mod(func(h *VnetHdr) { h.HdrLen = uint16(len(p)) }), p, true},
		{"header length beyond the packet", mod(func(h *VnetHdr) { h.HdrLen = uint16(len(p) + 1) }), p, false},
		{"ecn without gso", VnetHdr{GSOType: VnetGSOECN}, p, false},
		{"segment size without gso", VnetHdr{GSOSize: 1400}, p, false},
		{"data-valid alone", VnetHdr{Flags: VnetFlagDataValid}, p, true},
		{"ipv4 total length lies", good, func() []byte { q := bytes.Clone(p); binary.BigEndian.PutUint16(q[2:], uint16(len(q)-1)); return q }(), false},
		{"ipv4 header length beyond the packet", good, func() []byte { q := cut4(p, 40); q[0] = 0x4f; return q }(), false},
		{"good ipv6", hdrFor(p6, 6, 1428), p6, true},
		{"good udp gso over ipv6", hdrFor(u6, 17, 1400), u6, true},
		{"ipv6 payload length lies", hdrFor(p6, 6, 1428), p6[:len(p6)-1], false},
		{"ipv6 extension header with offload", hdrFor(p6, 6, 1428), func() []byte { q := bytes.Clone(p6); q[6] = 0; return q }(), false},
		{"ip version 5", good, func() []byte { q := bytes.Clone(p); q[0] = 0x55; return q }(), false},
		{"tcp header length beyond the packet", good, func() []byte { q := cut4(p, 60); q[32] = 15 << 4; return q }(), false},
		// A partial checksum (no GSO) whose field lies beyond the packet:
		// the kernel refuses the write (EINVAL), so it must be refused
		// here, counted as malformed, not lost as a write error.
		{"partial checksum, tcp", csumOnly(6), superPacket(false, 6, 100), true},
		{"partial checksum, udp", csumOnly(17), superPacket(false, 17, 100), true},
		{"partial checksum, tcp header cut short", csumOnly(6), cut4(superPacket(false, 6, 100), 36), false},
		{"partial checksum, no udp header", csumOnly(17), cut4(superPacket(false, 17, 100), 20), false},
		{"partial checksum of icmp", VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 20, CsumOffset: 2}, icmp4, false},
	}
}

func TestValidateVnet(t *testing.T) {
	for _, tt := range vnetCases() {
		if err := ValidateVnet(tt.h, tt.pkt, 1500); (err == nil) != tt.ok {
			t.Errorf("%s: err=%v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestVnetHdrRoundTrip(t *testing.T) {
	h := VnetHdr{Flags: 1, GSOType: 4, HdrLen: 60, GSOSize: 1428, CsumStart: 40, CsumOffset: 16}
	var b [VnetHdrLen]byte
	h.Encode(b[:])
	if DecodeVnetHdr(b[:]) != h || h.IsZero() || !(VnetHdr{}).IsZero() {
		t.Fatal("round trip")
	}
}

func FuzzVnet(f *testing.F) {
	p := superPacket(false, 6, 3000)
	var hb [VnetHdrLen]byte
	hdrFor(p, 6, 1448).Encode(hb[:])
	f.Add(append(hb[:], p...))
	q := superPacket(true, 17, 2000)
	hdrFor(q, 17, 1000).Encode(hb[:])
	f.Add(append(hb[:], q...))
	b := NewBatch(64, Headroom+1500)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < VnetHdrLen {
			return
		}
		h, pkt := DecodeVnetHdr(in), in[VnetHdrLen:]
		if ValidateVnet(h, pkt, 1500) != nil {
			return
		}
		n, err := Segment(h, pkt, b.Bufs, b.Sizes, Headroom)
		if err != nil {
			return
		}
		for i := 0; i < n; i++ {
			if b.Sizes[i] > 1500 {
				t.Fatalf("segment %d is %d bytes, over the MTU", i, b.Sizes[i])
			}
		}
	})
}

func TestGSOFrames(t *testing.T) {
	p := superPacket(false, 6, 3000)
	h := hdrFor(p, 6, 1448)
	out := NewBatch(4, Headroom+len(p))
	copy(out.Bufs[0][Headroom:], p)
	h.Encode(out.Bufs[0][Headroom-VnetHdrLen:])
	out.Sizes[0], out.GSO[0] = len(p), true
	copy(out.Bufs[1][Headroom:], []byte{0x45, 1, 2, 3})
	out.Sizes[1] = 4
	var stream bytes.Buffer
	w := NewWriter(&stream, 0)
	if err := w.WritePackets(out.Bufs, out.Sizes, out.GSO, 2, Headroom); err != nil {
		t.Fatal(err)
	}
	raw := append([]byte(nil), stream.Bytes()...)

	in := NewBatch(4, Headroom+MaxPacket)
	in.GSO[1] = true // stale flag must be cleared
	n, err := NewReader(bytes.NewReader(raw), 0).ReadPackets(in.Bufs, in.Sizes, in.GSO, Headroom, nil)
	if err != nil || n != 2 {
		t.Fatalf("read %d packets: %v", n, err)
	}
	if !in.GSO[0] || in.GSO[1] || in.Sizes[0] != len(p) || DecodeVnetHdr(in.Bufs[0][Headroom-VnetHdrLen:]) != h ||
		!bytes.Equal(in.Bufs[0][Headroom:Headroom+len(p)], p) || in.Sizes[1] != 4 {
		t.Fatalf("gso frame did not round-trip: gso %v sizes %v", in.GSO[:2], in.Sizes[:2])
	}
	// Without the capability the same stream is a protocol error.
	if _, err := NewReader(bytes.NewReader(raw), 0).ReadBatch(in.Bufs, in.Sizes, Headroom, nil); err == nil {
		t.Fatal("data-gso frame accepted without the capability")
	}
}
