package tunnel

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
)

// scriptDev is a Device whose reads follow a script: each step is a batch
// of packets or an error; after the script, reads fail with os.ErrClosed.
type scriptDev struct {
	batch int
	steps []scriptStep
	reads int
	mu    sync.Mutex
	vnet  bool
}

type scriptStep struct {
	pkts [][]byte
	err  error
}

func (d *scriptDev) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.reads++
	if len(d.steps) == 0 {
		return 0, fmt.Errorf("read script: %w", os.ErrClosed)
	}
	st := d.steps[0]
	d.steps = d.steps[1:]
	if st.err != nil {
		return 0, st.err
	}
	if len(st.pkts) > len(bufs) {
		panic("script batch larger than the reader's batch")
	}
	for i, p := range st.pkts {
		sizes[i] = copy(bufs[i][offset:], p)
	}
	return len(st.pkts), nil
}

func (d *scriptDev) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }
func (d *scriptDev) BatchSize() int                               { return d.batch }
func (d *scriptDev) Name() string                                 { return "script0" }
func (d *scriptDev) MTU() int                                     { return 1500 }
func (d *scriptDev) Close() error                                 { return nil }

// vnetScriptDev is a scriptDev with offloads: ReadVnet hands over header
// and packet as the script's packets hold them.
type vnetScriptDev struct{ *scriptDev }

func (d vnetScriptDev) VnetCapable() bool { return d.vnet }
func (d vnetScriptDev) ReadVnet(buf []byte, offset int) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.steps) == 0 {
		return 0, fmt.Errorf("read script: %w", os.ErrClosed)
	}
	st := d.steps[0]
	d.steps = d.steps[1:]
	if st.err != nil {
		return 0, st.err
	}
	return copy(buf[offset-VnetHdrLen:], st.pkts[0]) - VnetHdrLen, nil
}
func (d vnetScriptDev) WriteVnet(buf []byte, offset int) error { return nil }

func pktOf(n int, tag byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = tag
	}
	return p
}

// TestPacketSourceBatch: a plain device that reads several packets per
// call hands them out one by one, in order, each behind an all-zero
// virtio-net header (stale header bytes in the caller's buffer are
// cleared), then reads again; an error in between reaches the caller and
// the next read goes on; a closed device ends with ErrDeviceClosed.
func TestPacketSourceBatch(t *testing.T) {
	boom := errors.New("too many segments")
	dev := &scriptDev{batch: 4, steps: []scriptStep{
		{pkts: [][]byte{pktOf(60, 1), pktOf(1400, 2), pktOf(20, 3)}},
		{err: boom},
		{}, // no packet, no error: read again
		{pkts: [][]byte{pktOf(1500, 4)}},
	}}
	src := NewPacketSource(dev)
	buf := make([]byte, Headroom+MaxPacket)
	want := []struct {
		size int
		tag  byte
		err  error
	}{{60, 1, nil}, {1400, 2, nil}, {20, 3, nil}, {0, 0, boom}, {1500, 4, nil}, {0, 0, ErrDeviceClosed}}
	for i, w := range want {
		for j := range buf[:Headroom] {
			buf[j] = 0xee // stale header bytes from the last packet
		}
		n, err := src.ReadPacket(buf, Headroom)
		if w.err != nil {
			if !errors.Is(err, w.err) {
				t.Fatalf("read %d: err %v, want %v", i, err, w.err)
			}
			continue
		}
		if err != nil || n != w.size || buf[Headroom] != w.tag || buf[Headroom+n-1] != w.tag {
			t.Fatalf("read %d: %d bytes tag %d err %v, want %d bytes tag %d", i, n, buf[Headroom], err, w.size, w.tag)
		}
		if h := DecodeVnetHdr(buf[Headroom-VnetHdrLen:]); !h.IsZero() {
			t.Fatalf("read %d: header %+v, want all zero", i, h)
		}
	}
	if dev.reads != 5 {
		t.Fatalf("%d device reads for 4 script steps and the close, want 5 (one per batch)", dev.reads)
	}
}

// TestPacketSourceDirect: a device that reads one packet per call (both
// real drivers without offloads) reads straight into the caller's buffer,
// and the adapter keeps no reference to it afterwards.
func TestPacketSourceDirect(t *testing.T) {
	dev := &scriptDev{batch: 1, steps: []scriptStep{{pkts: [][]byte{pktOf(100, 7)}}, {}, {pkts: [][]byte{pktOf(40, 8)}}}}
	src := NewPacketSource(dev)
	bs, ok := src.(*batchSource)
	if !ok || bs.b != nil {
		t.Fatalf("source %T for a batch-1 device, want a direct batchSource", src)
	}
	buf := make([]byte, Headroom+MaxPacket)
	for _, w := range []struct {
		size int
		tag  byte
	}{{100, 7}, {40, 8}} {
		buf[Headroom-1] = 0xee
		n, err := src.ReadPacket(buf, Headroom)
		if err != nil || n != w.size || buf[Headroom] != w.tag || buf[Headroom-1] != 0 {
			t.Fatalf("read: %d bytes tag %d hdr %d err %v", n, buf[Headroom], buf[Headroom-1], err)
		}
		if bs.bufs[0] != nil {
			t.Fatal("the adapter still holds the caller's buffer")
		}
	}
	if _, err := src.ReadPacket(buf, Headroom); !errors.Is(err, ErrDeviceClosed) {
		t.Fatalf("after the script: %v, want ErrDeviceClosed", err)
	}
}

// TestPacketSourceErrors: bad offsets, a buffer too small for the packet,
// and a driver that never returns a packet are errors, not panics or spins.
func TestPacketSourceErrors(t *testing.T) {
	empty := make([]scriptStep, 40)
	for _, batch := range []int{1, 4} {
		src := NewPacketSource(&scriptDev{batch: batch, steps: empty})
		if _, err := src.ReadPacket(make([]byte, 64), 4); err == nil {
			t.Errorf("batch %d: offset below the header size accepted", batch)
		}
		if _, err := src.ReadPacket(make([]byte, 64), 65); err == nil {
			t.Errorf("batch %d: offset past the buffer accepted", batch)
		}
		if _, err := src.ReadPacket(make([]byte, Headroom+MaxPacket), Headroom); !errors.Is(err, errEmptyReads) {
			t.Errorf("batch %d: endless empty reads: %v", batch, err)
		}
	}
	src := NewPacketSource(&scriptDev{batch: 4, steps: []scriptStep{{pkts: [][]byte{pktOf(1500, 1), pktOf(10, 2)}}}})
	if _, err := src.ReadPacket(make([]byte, Headroom+1000), Headroom); err == nil {
		t.Error("a 1500-byte packet copied into a 1000-byte buffer")
	}
	if n, err := src.ReadPacket(make([]byte, Headroom+1000), Headroom); err != nil || n != 10 {
		t.Errorf("the packet after a too-large one: %d %v", n, err)
	}
}

// TestPacketSourceVnet: a device with offloads is read through ReadVnet,
// header included; one that has them off is batched like any Device.
func TestPacketSourceVnet(t *testing.T) {
	h := VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv4, HdrLen: 40, GSOSize: 1400, CsumStart: 20, CsumOffset: 16}
	raw := make([]byte, VnetHdrLen+3000)
	h.Encode(raw)
	on := vnetScriptDev{&scriptDev{batch: 128, vnet: true, steps: []scriptStep{{pkts: [][]byte{raw}}}}}
	src := NewPacketSource(on)
	if _, ok := src.(vnetSource); !ok {
		t.Fatalf("source %T for a vnet-capable device", src)
	}
	buf := make([]byte, Headroom+MaxPacket)
	n, err := src.ReadPacket(buf, Headroom)
	if err != nil || n != 3000 || DecodeVnetHdr(buf[Headroom-VnetHdrLen:]) != h {
		t.Fatalf("vnet read: %d %v header %+v", n, err, DecodeVnetHdr(buf[Headroom-VnetHdrLen:]))
	}
	off := vnetScriptDev{&scriptDev{batch: 1, steps: []scriptStep{{pkts: [][]byte{pktOf(50, 9)}}}}}
	if _, ok := NewPacketSource(off).(*batchSource); !ok {
		t.Fatal("a device with offloads off is not read through the batch adapter")
	}
}

// TestPacketSourceNoAllocs: reading through the adapter allocates nothing
// per packet, whether it copies out of its batch or reads directly.
func TestPacketSourceNoAllocs(t *testing.T) {
	pkts := [][]byte{pktOf(1400, 1), pktOf(60, 2), pktOf(1400, 3), pktOf(60, 4)}
	for _, batch := range []int{1, 4} {
		dev := &loopDev{batch: batch, pkts: pkts}
		src := NewPacketSource(dev)
		buf := make([]byte, Headroom+MaxPacket)
		if a := testing.AllocsPerRun(200, func() {
			if _, err := src.ReadPacket(buf, Headroom); err != nil {
				t.Fatal(err)
			}
		}); a != 0 {
			t.Errorf("batch %d: %v allocs per packet", batch, a)
		}
	}
}

// loopDev is a Device that reads its packets over and over.
type loopDev struct {
	batch int
	pkts  [][]byte
	i     int
}

func (d *loopDev) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := min(len(bufs), d.batch)
	for k := range n {
		sizes[k] = copy(bufs[k][offset:], d.pkts[d.i%len(d.pkts)])
		d.i++
	}
	return n, nil
}
func (d *loopDev) Write(bufs [][]byte, offset int) (int, error) { return len(bufs), nil }
func (d *loopDev) BatchSize() int                               { return d.batch }
func (d *loopDev) Name() string                                 { return "loop0" }
func (d *loopDev) MTU() int                                     { return 1500 }
func (d *loopDev) Close() error                                 { return nil }
