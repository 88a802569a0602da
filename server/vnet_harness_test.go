package server

import (
	"crypto/x509"
	"net/netip"
	"sync"
	"testing"

	"github.com/sallyport/sallyport/tunnel"
)

// fakeVnetTUN is a fakeTUN with offloads: devices may negotiate gso, and
// super-packets reach it through WriteVnet, which records them.
type fakeVnetTUN struct {
	*fakeTUN
	mu  sync.Mutex
	gso [][]byte // header + packet, as written
}

func (f *fakeVnetTUN) VnetCapable() bool { return true }

func (f *fakeVnetTUN) ReadVnet(buf []byte, offset int) (int, error) {
	<-f.closed
	return 0, tunnel.ErrProtocol // never reached in these tests: reads go through Read
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
	h := newGatewayHarnessOn(t, engPolicy, netip.Prefix{}, func(f *fakeTUN) tunnel.Device { vt = &fakeVnetTUN{fakeTUN: f}; return vt })
	defer h.close()
	d := h.dial(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	defer d.tc.Close()
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
	d.addr = pc.Address.Addr().String()
	waitFor(t, func() bool { _, ok := h.sessionOf("alice"); return ok })

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
