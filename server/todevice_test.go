package server

import (
	"crypto/x509"
	"encoding/binary"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// batchTUN is a plain TUN (no offloads) that reads several packets per
// call, as a driver with batch reads does: each Read returns one whole
// batch sent on batches.
type batchTUN struct {
	*fakeTUN
	batches chan [][]byte
}

func (b batchTUN) BatchSize() int { return 8 }

func (b batchTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case batch := <-b.batches:
		for i, p := range batch {
			sizes[i] = copy(bufs[i][offset:], p)
		}
		return len(batch), nil
	case <-b.closed:
		return 0, os.ErrClosed
	}
}

// TestGatewayToDeviceBatchTUN: on a TUN without offloads that reads
// several packets at once, the one LAN -> device loop sorts a batch with
// packets for two devices and for nobody: each device gets its own
// replies in order, the packet for an unknown address is counted as
// no_route, the one without a flow as no_flow.
func TestGatewayToDeviceBatchTUN(t *testing.T) {
	var bt batchTUN
	h := newGatewayHarnessOn(t, engPolicy, netip.Prefix{}, func(f *fakeTUN) tunnel.Device { bt = batchTUN{f, make(chan [][]byte, 1)}; return bt })
	defer h.close()
	alice := h.connect(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	defer alice.tc.Close()
	bob := h.connect(h.ca.leafWithKey(t, "bob", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	defer bob.tc.Close()
	for _, d := range []*device{alice, bob} {
		d.send(t, udp4(d.addr, "192.168.77.10", 5000, 53))
	}
	waitFor(t, func() bool { return len(h.tun.packets()) == 2 })

	// One batch: replies for both, interleaved, one for a free address and
	// one bob never asked for.
	reply := func(d *device, seq uint16) []byte {
		p := udp4("192.168.77.10", d.addr, 53, 5000)
		binary.BigEndian.PutUint16(p[4:], seq) // IP ID marks the order
		return p
	}
	batch := [][]byte{reply(alice, 1), reply(bob, 1), reply(alice, 2), udp4("192.168.77.10", "10.8.0.200", 53, 5000), udp4("192.168.77.10", bob.addr, 53, 6000), reply(bob, 2)}
	bt.batches <- batch
	for _, d := range []*device{alice, bob} {
		for want := uint16(1); want <= 2; want++ {
			typ, p, ok := d.next(5 * time.Second)
			if !ok || typ != tunnel.FrameData || binary.BigEndian.Uint16(p[4:]) != want || p[19] != netip.MustParseAddr(d.addr).As4()[3] {
				t.Fatalf("%s: frame %#x ok=%v, want reply %d", d.addr, typ, ok, want)
			}
		}
	}
	waitFor(t, func() bool { st, _ := h.sessionOf("bob"); return st.Dropped.NoFlow == 1 })
	if got := h.s.noRoute.Load(); got != 1 {
		t.Fatalf("no_route %d, want 1", got)
	}
}
