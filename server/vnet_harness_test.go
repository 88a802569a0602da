package server

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// fakeVnetTUN is a fakeTUN with offloads: devices may negotiate gso, and
// super-packets reach it through WriteVnet, which records them.
type fakeVnetTUN struct {
	*fakeTUN
	vin chan []byte // header + packet, read by ReadVnet
	mu  sync.Mutex
	gso [][]byte // header + packet, as written
}

func newFakeVnetTUN(f *fakeTUN) *fakeVnetTUN {
	return &fakeVnetTUN{fakeTUN: f, vin: make(chan []byte, 16)}
}

// sendVnet hands the gateway p from the LAN as a TUN with offloads reads
// it: whole, behind header h.
func (f *fakeVnetTUN) sendVnet(h tunnel.VnetHdr, p []byte) {
	b := make([]byte, tunnel.VnetHdrLen+len(p))
	h.Encode(b)
	copy(b[tunnel.VnetHdrLen:], p)
	f.vin <- b
}

func (f *fakeVnetTUN) VnetCapable() bool { return true }

// ReadVnet is how the gateway reads a TUN with offloads (the default on
// Linux): a packet sent on vin is a virtio-net header and the packet, one
// sent on the fakeTUN's in a plain packet (all-zero header).
func (f *fakeVnetTUN) ReadVnet(buf []byte, offset int) (int, error) {
	var p []byte
	select {
	case p = <-f.in:
		p = append(make([]byte, tunnel.VnetHdrLen), p...)
	case p = <-f.vin:
	case <-f.closed:
		return 0, os.ErrClosed
	}
	copy(buf[offset-tunnel.VnetHdrLen:], p)
	return len(p) - tunnel.VnetHdrLen, nil
}

// Read must not be used on a TUN with offloads: it would split
// super-packets.
func (f *fakeVnetTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	panic("Read on a TUN with offloads: the gateway must use ReadVnet")
}

func (f *fakeVnetTUN) WriteVnet(buf []byte, offset int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gso = append(f.gso, append([]byte(nil), buf[offset-tunnel.VnetHdrLen:]...))
	return nil
}

func (f *fakeVnetTUN) written() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.gso)
}

// sendGSO sends one data-gso frame: header h in front of p.
func (d *device) sendGSO(t *testing.T, h tunnel.VnetHdr, p []byte) {
	t.Helper()
	b := tunnel.NewBatch(1, tunnel.Headroom+len(p))
	b.Sizes[0] = copy(b.Bufs[0][tunnel.Headroom:], p)
	h.Encode(b.Bufs[0][tunnel.Headroom-tunnel.VnetHdrLen:])
	if err := d.w.WritePackets(b.Bufs, b.Sizes, []bool{true}, 1, tunnel.Headroom); err != nil {
		t.Fatal(err)
	}
}

// TestGatewayRejectsBadVnetHeader: a device that negotiated gso can send
// a virtio-net header with each packet; the gateway hands one to the kernel
// only when it describes the packet. A lying header (unknown flags, a
// checksum pointing outside the packet, a segment size above the MTU) is
// dropped as malformed.
func TestGatewayRejectsBadVnetHeader(t *testing.T) {
	var vt *fakeVnetTUN
	h := newGatewayHarnessOn(t, engPolicy, netip.Prefix{}, func(f *fakeTUN) tunnel.Device { vt = newFakeVnetTUN(f); return vt })
	defer h.close()
	d := h.connectGSO(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	defer d.tc.Close()

	pkt := udp4(d.addr, "192.168.77.10", 5000, 53)
	lies := []tunnel.VnetHdr{
		{Flags: 0x80}, // unknown flag bits
		{Flags: tunnel.VnetFlagNeedsCsum, CsumStart: 200, CsumOffset: 6}, // checksum outside the packet
		{GSOType: tunnel.VnetGSOTCPv4, GSOSize: 9000, HdrLen: 28},        // TCP GSO on a UDP packet, segment above the MTU
	}
	for _, lie := range lies {
		d.sendGSO(t, lie, pkt)
	}
	d.sendGSO(t, tunnel.VnetHdr{}, pkt) // an honest (empty) header passes
	waitFor(t, func() bool {
		st, _ := h.sessionOf("alice")
		return st.Dropped.Malformed == uint64(len(lies)) && vt.written() == 1
	})
	if got := len(h.tun.packets()); got != 0 {
		t.Fatalf("%d packets reached the TUN without their header", got)
	}
}

// tcpSuper4 is a TCP/IPv4 super-packet of size payload bytes from src:sport
// to dst:dport as a TUN with offloads hands it over, with its header.
func tcpSuper4(src, dst string, sport, dport uint16, size, mss int) ([]byte, tunnel.VnetHdr) {
	tcp := make([]byte, 20+size)
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	tcp[12], tcp[13] = 5<<4, 0x18
	copy(tcp[20:], bytes.Repeat([]byte{'x'}, size))
	return ipv4(6, src, dst, tcp), tunnel.VnetHdr{Flags: tunnel.VnetFlagNeedsCsum, GSOType: tunnel.VnetGSOTCPv4, HdrLen: 40, GSOSize: uint16(mss), CsumStart: 20, CsumOffset: 16}
}

// connectGSO is connect with the gso capability offered.
func (h *gatewayHarness) connectGSO(cert tls.Certificate) *device {
	t := h.t
	t.Helper()
	d := h.dial(cert)
	if err := d.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion, Caps: []string{tunnel.CapGSO}}); err != nil {
		t.Fatal(err)
	}
	typ, payload, err := d.r.Next()
	if err != nil || typ != tunnel.FrameConfig {
		t.Fatalf("config: %#x %v", typ, err)
	}
	pc, _ := tunnel.DecodeConfig(payload)
	if !tunnel.HasCap(pc.Caps, tunnel.CapGSO) {
		t.Fatal("gso not negotiated with a vnet-capable TUN")
	}
	d.addr, d.cfg = pc.Address.Addr().String(), pc
	waitFor(t, func() bool {
		for _, st := range h.s.Status().Sessions {
			if st.Address == d.addr {
				return true
			}
		}
		return false
	})
	return d
}

// TestGatewayToDeviceVnet runs the default LAN -> device path (a TUN with
// offloads, read whole through ReadVnet): a TCP super-packet from the LAN
// reaches a device that negotiated gso whole, behind its header, in one
// data-gso frame, and a device without gso as MTU-sized segments with
// complete checksums; a plain packet is a plain frame either way; packets
// for flows the device never opened stay out (dropped:no_flow), counters
// count what was sent.
func TestGatewayToDeviceVnet(t *testing.T) {
	var vt *fakeVnetTUN
	h := newGatewayHarnessOn(t, engPolicy, netip.Prefix{}, func(f *fakeTUN) tunnel.Device { vt = newFakeVnetTUN(f); return vt })
	defer h.close()
	withGSO := h.connectGSO(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	defer withGSO.tc.Close()
	plain := h.connect(h.ca.leafWithKey(t, "bob", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	defer plain.tc.Close()

	for _, d := range []*device{withGSO, plain} {
		// Each device opens a TCP flow to the LAN (sent as a plain frame).
		syn := ipv4(6, d.addr, "192.168.88.5", l4(6, 40000, 443, 0, 0))
		d.send(t, syn)
	}
	waitFor(t, func() bool { return len(h.tun.packets()) == 2 })

	const size, mss = 4000, 1400
	for _, d := range []*device{withGSO, plain} {
		sp, hdr := tcpSuper4("192.168.88.5", d.addr, 443, 40000, size, mss)
		vt.sendVnet(hdr, sp)
		vt.sendVnet(hdr, func() []byte { p, _ := tcpSuper4("192.168.88.5", d.addr, 443, 40001, size, mss); return p }()) // no such flow
		vt.sendVnet(tunnel.VnetHdr{}, ipv4(6, "192.168.88.5", d.addr, l4(6, 443, 40000, 0, 0)))                          // a plain ACK
	}

	// The lanes may send the ACK before the bulk: collect each device's
	// frames without assuming an order.
	var gsoFrames, acks int
	for gsoFrames+acks < 2 {
		typ, payload, ok := withGSO.next(5 * time.Second)
		switch {
		case ok && typ == tunnel.FrameDataGSO && len(payload) == tunnel.VnetHdrLen+40+size:
			if hd := tunnel.DecodeVnetHdr(payload); hd.GSOSize != mss || hd.GSOType != tunnel.VnetGSOTCPv4 {
				t.Fatalf("gso device: header %+v", hd)
			}
			gsoFrames++
		case ok && typ == tunnel.FrameData && len(payload) == 44:
			acks++
		default:
			t.Fatalf("gso device: frame %#x of %d bytes (ok %v), want one data-gso of %d and the ACK", typ, len(payload), ok, tunnel.VnetHdrLen+40+size)
		}
	}
	if gsoFrames != 1 || acks != 1 {
		t.Fatalf("gso device: %d super-packets and %d ACKs", gsoFrames, acks)
	}

	got := 0
	acks = 0
	for got < size || acks == 0 {
		typ, payload, ok := plain.next(5 * time.Second)
		if !ok || typ != tunnel.FrameData {
			t.Fatalf("plain device: frame %#x (ok %v) after %d of %d bytes", typ, ok, got, size)
		}
		if len(payload) == 44 {
			acks++
			continue
		}
		if len(payload) > 40+mss {
			t.Fatalf("plain device: %d-byte segment above the MSS", len(payload))
		}
		if tcpChecksum(payload) != 0 {
			t.Fatal("plain device: segment with a wrong TCP checksum")
		}
		got += len(payload) - 40
	}
	if got != size || acks != 1 {
		t.Fatalf("plain device: %d payload bytes and %d ACKs, want %d and 1", got, acks, size)
	}
	for _, dev := range []string{"alice", "bob"} {
		// The counters move after the flush: wait for them, then check
		// that the refused packet was not counted as sent.
		waitFor(t, func() bool { st, _ := h.sessionOf(dev); return st.Dropped.NoFlow == 1 && st.PacketsOut >= 2 })
		if st, _ := h.sessionOf(dev); st.PacketsOut != 2 {
			t.Fatalf("%s: packets_out %d, want 2 (the super-packet and the ACK)", dev, st.PacketsOut)
		}
	}
}

// tcpChecksum folds the TCP checksum of an IPv4 packet: 0 when it is right.
func tcpChecksum(p []byte) uint16 {
	ihl := int(p[0]&0xf) * 4
	seg := p[ihl:]
	var acc uint32
	acc += uint32(binary.BigEndian.Uint16(p[12:])) + uint32(binary.BigEndian.Uint16(p[14:]))
	acc += uint32(binary.BigEndian.Uint16(p[16:])) + uint32(binary.BigEndian.Uint16(p[18:]))
	acc += 6 + uint32(len(seg))
	for i := 0; i+1 < len(seg); i += 2 {
		acc += uint32(binary.BigEndian.Uint16(seg[i:]))
	}
	if len(seg)%2 == 1 {
		acc += uint32(seg[len(seg)-1]) << 8
	}
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return ^uint16(acc)
}
