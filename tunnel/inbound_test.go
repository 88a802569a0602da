package tunnel

import (
	"bytes"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// recDev records what is written to it, plain packets and super-packets
// alike, in order.
type recDev struct {
	scriptDev
	got    [][]byte
	writes int
	err    error
}

func (d *recDev) Write(bufs [][]byte, offset int) (int, error) {
	d.writes++
	for _, b := range bufs {
		d.got = append(d.got, append([]byte(nil), b[offset:]...))
	}
	return len(bufs), d.err
}
func (d *recDev) VnetCapable() bool                            { return true }
func (d *recDev) ReadVnet(buf []byte, offset int) (int, error) { return 0, io.EOF }
func (d *recDev) WriteVnet(buf []byte, offset int) error { // header and packet
	d.writes++
	d.got = append(d.got, append([]byte(nil), buf[offset-VnetHdrLen:]...))
	return d.err
}

// tagged is a TCP packet of size bytes whose size tells it apart.
func tagged(size int) []byte { return superPacket(false, 6, size-40) }

// batchOf puts pkts into a batch at Headroom; gso[i] packets get hdrs[i].
func batchOf(pkts [][]byte, hdrs map[int]VnetHdr) *Batch {
	b := NewBatch(len(pkts), Headroom+MaxPayload)
	for i, p := range pkts {
		b.Sizes[i] = copy(b.Bufs[i][Headroom:], p)
		if h, ok := hdrs[i]; ok {
			h.Encode(b.Bufs[i][Headroom-VnetHdrLen:])
			b.GSO[i] = true
		}
	}
	return b
}

func sizes(pkts [][]byte) []int {
	out := make([]int, len(pkts))
	for i, p := range pkts {
		out[i] = len(p)
	}
	return out
}

// congested returns an AQM that drops at the next decision.
func congested(now time.Time) *AQM {
	a := NewAQM()
	a.Drop(now.Add(-time.Second), 1<<30)
	return a
}

// TestInboundKeepsOrderUnderCongestion: when AQM drops the bulk victim the
// rest reach the TUN in the order they came, on the laptop as on the
// gateway. (The laptop used to swap the last packet into the victim's
// slot, reordering the batch its TCP stack received.)
func TestInboundKeepsOrderUnderCongestion(t *testing.T) {
	now := time.Unix(1e9, 0)
	pkts := [][]byte{tagged(100), tagged(1500), tagged(120), tagged(1400), tagged(140), tagged(160)}
	dev := &recDev{}
	var drops DropCounts
	in := Inbound{Dev: dev, MTU: 1500, Drops: &drops, AQM: congested(now)}
	res := in.Deliver(batchOf(pkts, nil), len(pkts), now, 1<<30)
	want := []int{100, 120, 1400, 140, 160} // 1500, the largest bulk packet, is the victim
	if got := sizes(dev.got); !equalInts(got, want) {
		t.Fatalf("TUN got sizes %v, want %v (order kept)", got, want)
	}
	if drops.Load(DropCongestion) != 1 || res.Packets != 6 || res.Written != 5 || dev.writes != 1 {
		t.Fatalf("congestion %d, result %+v, %d writes", drops.Load(DropCongestion), res, dev.writes)
	}
	var total uint64
	for _, p := range pkts {
		total += uint64(len(p))
	}
	if res.Bytes != total {
		t.Fatalf("bytes %d, want %d (dropped ones included)", res.Bytes, total)
	}
}

// TestInboundNoCongestion: below the AQM target nothing is dropped; a nil
// AQM never drops.
func TestInboundNoCongestion(t *testing.T) {
	now := time.Unix(1e9, 0)
	pkts := [][]byte{tagged(1500), tagged(1400)}
	for _, aqm := range []*AQM{nil, NewAQM()} {
		dev := &recDev{}
		var drops DropCounts
		in := Inbound{Dev: dev, MTU: 1500, Drops: &drops, AQM: aqm}
		in.Deliver(batchOf(pkts, nil), 2, now, 0)
		in.Deliver(batchOf(pkts, nil), 2, now.Add(time.Second), 0)
		if len(dev.got) != 4 || drops.Load(DropCongestion) != 0 {
			t.Fatalf("aqm %v: %d written, %d dropped", aqm != nil, len(dev.got), drops.Load(DropCongestion))
		}
	}
}

// TestInboundHeaderValidation: one rule and one limit on both sides: a
// super-packet reaches the TUN only with a header that describes it for
// the tunnel MTU; of a plain packet only the IP version is looked at (no
// verdict): bytes that are neither IPv4 nor IPv6 are malformed.
func TestInboundHeaderValidation(t *testing.T) {
	now := time.Unix(1e9, 0)
	super := superPacket(false, 6, 8000)
	good := hdrFor(super, 6, 1400)
	tooBig := hdrFor(super, 6, 1461) // 1461+40 > 1500
	atMTU := hdrFor(super, 6, 1460)  // 1460+40 = 1500
	lying := good
	lying.CsumOffset = 10
	garbage := []byte{1, 2, 3}
	pkts := [][]byte{tagged(60), super, super, super, super, garbage}
	dev := &recDev{}
	var drops DropCounts
	in := Inbound{Dev: dev, MTU: 1500, Drops: &drops}
	res := in.Deliver(batchOf(pkts, map[int]VnetHdr{1: good, 2: tooBig, 3: lying, 4: atMTU}), len(pkts), now, 0)
	if got, want := sizes(dev.got), []int{60, VnetHdrLen + len(super), VnetHdrLen + len(super)}; !equalInts(got, want) {
		t.Fatalf("TUN got %v, want %v", got, want)
	}
	if drops.Load(DropMalformed) != 3 || res.Written != 3 {
		t.Fatalf("malformed %d, written %d", drops.Load(DropMalformed), res.Written)
	}
	if h := DecodeVnetHdr(dev.got[1]); h != good {
		t.Fatalf("header written %+v, want %+v", h, good)
	}
	// The same header is refused for a smaller tunnel MTU.
	dev2 := &recDev{}
	in2 := Inbound{Dev: dev2, MTU: 1280, Drops: &drops}
	in2.Deliver(batchOf([][]byte{super}, map[int]VnetHdr{0: good}), 1, now, 0)
	if len(dev2.got) != 0 || drops.Load(DropMalformed) != 4 {
		t.Fatalf("segment of 1400 at MTU 1280 reached the TUN")
	}
}

// TestInboundVerdict: the verdict decides each packet that passed the
// header check; drops are counted by its reason (DropQuiet not at all),
// survivors keep their order, and no buffer leaves the batch.
func TestInboundVerdict(t *testing.T) {
	now := time.Unix(1e9, 0)
	pkts := [][]byte{tagged(100), tagged(101), tagged(102), tagged(103), tagged(104), tagged(105)}
	why := map[int]DropReason{101: DropSpoofed, 102: DropQuiet, 104: DropPolicy}
	var seen []int
	var gotNow time.Time
	verdict := func(pkt []byte, t time.Time) DropReason {
		seen = append(seen, len(pkt))
		gotNow = t
		return why[len(pkt)]
	}
	dev := &recDev{}
	var drops DropCounts
	in := Inbound{Dev: dev, MTU: 1500, Verdict: verdict, Drops: &drops}
	b := batchOf(pkts, nil)
	before := map[*byte]bool{}
	for _, buf := range b.Bufs {
		before[&buf[:1][0]] = true
	}
	res := in.Deliver(b, len(pkts), now, 0)
	if got, want := sizes(dev.got), []int{100, 103, 105}; !equalInts(got, want) {
		t.Fatalf("TUN got %v, want %v", got, want)
	}
	if !equalInts(seen, []int{100, 101, 102, 103, 104, 105}) || !gotNow.Equal(now) {
		t.Fatalf("verdict saw %v at %v", seen, gotNow)
	}
	if drops.Load(DropSpoofed) != 1 || drops.Load(DropPolicy) != 1 || drops.Load(DropQuiet) != 0 || res.Written != 3 {
		t.Fatalf("drops spoofed=%d policy=%d, result %+v", drops.Load(DropSpoofed), drops.Load(DropPolicy), res)
	}
	for _, buf := range b.Bufs {
		if !before[&buf[:1][0]] {
			t.Fatal("a buffer of the batch was replaced")
		}
		delete(before, &buf[:1][0])
	}
	if len(before) != 0 {
		t.Fatalf("%d buffers lost from the batch", len(before))
	}
	// Nothing passes: no write at all.
	dev.got, dev.writes = nil, 0
	in.Verdict = func([]byte, time.Time) DropReason { return DropPolicy }
	if res := in.Deliver(batchOf(pkts, nil), len(pkts), now, 0); res.Written != 0 || dev.writes != 0 {
		t.Fatalf("all dropped, yet %d writes", dev.writes)
	}
}

// TestInboundWriteError: a failing TUN write is reported, not fatal; what
// was received is counted whatever happened to it.
func TestInboundWriteError(t *testing.T) {
	dev := &recDev{err: errors.New("tun gone")}
	var drops DropCounts
	var packets, bytes atomic.Uint64
	in := Inbound{Dev: dev, MTU: 1500, Drops: &drops, Packets: &packets, Bytes: &bytes}
	res := in.Deliver(batchOf([][]byte{tagged(100), {1, 2}}, map[int]VnetHdr{1: {GSOType: VnetGSOTCPv4}}), 2, time.Now(), 0)
	if res.WriteErr == nil || res.Written != 1 {
		t.Fatalf("result %+v", res)
	}
	if packets.Load() != 2 || bytes.Load() != 102 {
		t.Fatalf("counted %d packets, %d bytes; want 2, 102", packets.Load(), bytes.Load())
	}
}

// TestInboundReadStream: packets framed by a Writer come out of the TUN in
// order; control frames reach the callback; a FrameDataGSO from a peer that
// did not negotiate gso is a protocol error after the packets before it.
func TestInboundReadStream(t *testing.T) {
	var wire bytes.Buffer
	w := NewWriter(&wire, 0)
	pkts := [][]byte{tagged(100), tagged(200), tagged(300)}
	bufs := make([][]byte, len(pkts))
	szs := make([]int, len(pkts))
	for i, p := range pkts {
		bufs[i] = append(make([]byte, Headroom), p...)
		szs[i] = len(p)
	}
	if err := w.WriteBatch(bufs, szs, len(pkts), Headroom); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteKeepalive(); err != nil {
		t.Fatal(err)
	}
	super := superPacket(false, 6, 4000)
	sb := append(make([]byte, Headroom), super...)
	hdrFor(super, 6, 1400).Encode(sb[Headroom-VnetHdrLen:])
	if err := w.WritePackets([][]byte{sb}, []int{len(super)}, []bool{true}, 1, Headroom); err != nil {
		t.Fatal(err)
	}
	raw := wire.Bytes()
	for _, gso := range []bool{true, false} {
		dev := &recDev{}
		var drops DropCounts
		in := Inbound{Dev: dev, MTU: 1500, Drops: &drops}
		r := NewReader(bytes.NewReader(raw), 0)
		b := NewBatch(8, Headroom+MaxPayload)
		controls := 0
		control := func(typ byte, _ []byte) error {
			if typ == FrameKeepalive {
				controls++
			}
			return nil
		}
		var err error
		var written int
		for err == nil {
			var res InboundResult
			res, err = in.ReadStream(r, b, gso, nil, control)
			written += res.Written
		}
		want := []int{100, 200, 300}
		if gso {
			want = append(want, VnetHdrLen+len(super))
		}
		if got := sizes(dev.got); !equalInts(got, want) || controls != 1 {
			t.Fatalf("gso=%v: TUN got %v (want %v), %d keepalives, err %v", gso, got, want, controls, err)
		}
		if gso != errors.Is(err, io.EOF) || (!gso && !errors.Is(err, ErrProtocol)) {
			t.Fatalf("gso=%v: stream ended with %v", gso, err)
		}
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestInboundThief: one batch of what a thief sends, honest packets
// between: every lying virtio-net header (vnetCases) and every plain
// packet the kernel would refuse (empty, not IPv4 or IPv6) is dropped as
// malformed and counted; everything else reaches the TUN in the order it
// came, whatever was dropped around it. Plain packets are bounded by the
// frame, not the MTU (a router takes an oversize packet and answers it
// with ICMP), so one at the MTU and one over it both pass.
func TestInboundThief(t *testing.T) {
	now := time.Unix(1e9, 0)
	var pkts [][]byte
	hdrs := map[int]VnetHdr{}
	var want [][]byte // what the TUN must get, in order (GSO ones with their header)
	malformed := 0
	honest := 100
	add := func(p []byte, h *VnetHdr, pass bool) {
		if h != nil {
			hdrs[len(pkts)] = *h
		}
		pkts = append(pkts, p)
		switch {
		case !pass:
			malformed++
		case h != nil:
			var hb [VnetHdrLen]byte
			h.Encode(hb[:])
			want = append(want, append(hb[:], p...))
		default:
			want = append(want, p)
		}
		honest++
		pkts = append(pkts, tagged(honest)) // an honest packet after each
		want = append(want, tagged(honest))
	}
	for _, c := range vnetCases() {
		add(c.pkt, &c.h, c.ok)
	}
	add(tagged(1500), nil, true) // a plain packet at the MTU
	add(tagged(1501), nil, true) // and one byte over it
	add(superPacket(true, 17, 100), nil, true)
	add([]byte{}, nil, false) // empty: the kernel refuses it, and wireguard's GRO refuses the whole write
	add([]byte{0x50, 1, 2, 3}, nil, false)
	add(bytes.Repeat([]byte{0x45}, 3), nil, true) // a short IPv4 packet: the kernel drops it, not the write

	dev := &recDev{}
	var drops DropCounts
	var packets, byts atomic.Uint64
	in := Inbound{Dev: dev, MTU: 1500, Drops: &drops, Packets: &packets, Bytes: &byts}
	res := in.Deliver(batchOf(pkts, hdrs), len(pkts), now, 0)
	if len(dev.got) != len(want) {
		t.Fatalf("TUN got %d packets, want %d", len(dev.got), len(want))
	}
	for i := range want {
		if !bytes.Equal(dev.got[i], want[i]) {
			t.Fatalf("TUN packet %d is %d bytes, want %d (order kept)", i, len(dev.got[i]), len(want[i]))
		}
	}
	if got := drops.Load(DropMalformed); got != uint64(malformed) || res.Written != len(want) || res.Packets != len(pkts) || packets.Load() != uint64(len(pkts)) {
		t.Fatalf("malformed %d (want %d), result %+v, counted %d", got, malformed, res, packets.Load())
	}
}

// TestInboundAllDropped: a batch in which nothing survives writes nothing
// and counts every packet once: all malformed, and a one-packet batch
// whose one bulk packet is the congestion victim.
func TestInboundAllDropped(t *testing.T) {
	now := time.Unix(1e9, 0)
	super := superPacket(false, 6, 4000)
	bad := hdrFor(super, 6, 1400)
	bad.GSOSize = 0
	for _, tc := range []struct {
		name  string
		pkts  [][]byte
		hdrs  map[int]VnetHdr
		aqm   *AQM
		why   DropReason
		drops uint64
	}{
		{"every header lies", [][]byte{super, super, super}, map[int]VnetHdr{0: bad, 1: bad, 2: bad}, nil, DropMalformed, 3},
		{"every packet empty", [][]byte{{}, {}}, nil, nil, DropMalformed, 2},
		{"one packet, the congestion victim", [][]byte{tagged(1400)}, nil, congested(now), DropCongestion, 1},
	} {
		dev := &recDev{}
		var drops DropCounts
		in := Inbound{Dev: dev, MTU: 1500, Drops: &drops, AQM: tc.aqm}
		res := in.Deliver(batchOf(tc.pkts, tc.hdrs), len(tc.pkts), now, 1<<30)
		if res.Written != 0 || dev.writes != 0 || res.WriteErr != nil || res.Packets != len(tc.pkts) {
			t.Errorf("%s: result %+v, %d writes", tc.name, res, dev.writes)
		}
		if got := drops.Load(tc.why); got != tc.drops {
			t.Errorf("%s: %s drops %d, want %d", tc.name, tc.why, got, tc.drops)
		}
	}
	// A one-packet batch of a small packet is never thinned.
	dev := &recDev{}
	var drops DropCounts
	in := Inbound{Dev: dev, MTU: 1500, Drops: &drops, AQM: congested(now)}
	if res := in.Deliver(batchOf([][]byte{tagged(100)}, nil), 1, now, 1<<30); res.Written != 1 || drops.Load(DropCongestion) != 0 {
		t.Errorf("a lone ACK-sized packet: result %+v, congestion %d", res, drops.Load(DropCongestion))
	}
}

// FuzzInbound: arbitrary bytes from the peer's stream through
// Inbound.ReadStream (gso negotiated, or not; under congestion, or not).
// It never panics; every packet it counts is written or counted dropped
// exactly once; what reaches the TUN is what the stream carried, in the
// order it came, with a header ValidateVnet accepts for the MTU or none,
// and never a packet the TUN would refuse.
func FuzzInbound(f *testing.F) {
	var s []byte
	s, _ = AppendFrame(s, FrameData, tagged(100))
	s, _ = AppendFrame(s, FrameKeepalive, nil)
	s, _ = AppendFrame(s, FrameData, []byte{0x50, 1, 2})
	super := superPacket(false, 6, 300) // small seeds: the fuzzer minimizes what it finds byte by byte
	var hb [VnetHdrLen]byte
	hdrFor(super, 6, 100).Encode(hb[:])
	s, _ = AppendFrame(s, FrameDataGSO, append(hb[:], super...))
	s, _ = AppendFrame(s, FrameData, tagged(600)) // bulk: a congestion victim
	f.Add(s, byte(0))
	f.Add(s, byte(3))
	f.Add([]byte{FrameDataGSO, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x45, 0}, byte(1))
	f.Add([]byte{FrameData, 0, 0, 1, 0x60}, byte(0))
	const mtu = 1500
	b := NewBatch(8, Headroom+MaxPayload)
	f.Fuzz(func(t *testing.T, in []byte, mode byte) {
		gso, congestion := mode&1 != 0, mode&2 != 0
		// What the stream carries, in order, as the TUN would get it.
		var sent [][]byte
		r := NewReader(bytes.NewReader(in), 0)
		for {
			typ, p, err := r.Next()
			if err != nil || typ == FrameDataGSO && !gso {
				break
			}
			if typ == FrameData || typ == FrameDataGSO {
				sent = append(sent, bytes.Clone(p))
			}
		}
		dev := &recDev{}
		var drops DropCounts
		inb := Inbound{Dev: dev, MTU: mtu, Drops: &drops}
		now := time.Unix(1e9, 0)
		if congestion {
			inb.AQM = congested(now)
		}
		r = NewReader(bytes.NewReader(in), 0)
		received, written := 0, 0
		for range 1000 {
			res, err := inb.ReadStream(r, b, gso, nil, func(byte, []byte) error { return nil })
			received += res.Packets
			written += res.Written
			if err != nil {
				break
			}
		}
		var dropped uint64
		for r := Accept; r < numDropReasons; r++ {
			dropped += drops.Load(r)
		}
		if written != len(dev.got) || uint64(received) != uint64(written)+dropped || received > len(sent) {
			t.Fatalf("received %d (stream carried %d), written %d, TUN got %d, dropped %d", received, len(sent), written, len(dev.got), dropped)
		}
		next := 0 // dev.got must be a subsequence of sent
		for _, g := range dev.got {
			for next < len(sent) && !bytes.Equal(sent[next], g) {
				next++
			}
			if next == len(sent) {
				t.Fatalf("TUN got a packet the stream did not carry in that order (%d bytes)", len(g))
			}
			next++
			if len(g) == 0 || g[0]>>4 != 4 && g[0]>>4 != 6 {
				if len(g) <= VnetHdrLen {
					t.Fatalf("TUN got a %d-byte packet", len(g))
				}
				if err := ValidateVnet(DecodeVnetHdr(g), g[VnetHdrLen:], mtu); err != nil {
					t.Fatalf("TUN got a header ValidateVnet refuses: %v", err)
				}
			}
		}
	})
}

// fakeDatagrams is a DatagramReader over a script of arrivals: each
// ReadPackets returns the next arrival (packets, bad count), then err.
type fakeDatagrams struct {
	arrivals []arrival
	err      error
}

// arrival is what one ReadPackets of fakeDatagrams returns.
type arrival struct {
	pkts [][]byte
	bad  int
}

func (f *fakeDatagrams) Wait() error {
	if len(f.arrivals) == 0 {
		return f.err
	}
	return nil
}

func (f *fakeDatagrams) ReadPackets(bufs [][]byte, sizes []int, offset int) (int, int, error) {
	if len(f.arrivals) == 0 {
		return 0, 0, f.err
	}
	a := f.arrivals[0]
	f.arrivals = f.arrivals[1:]
	for i, p := range a.pkts {
		sizes[i] = copy(bufs[i][offset:], p)
	}
	return len(a.pkts), a.bad, nil
}

// TestInboundReadDatagrams: the datagram path's batches go through the
// same receive half: counted, validated, written in order with one write;
// datagrams the transport could not take count as malformed; a batch left
// with gso marks by a stream session is read as plain packets; the
// transport's end comes back as the error.
func TestInboundReadDatagrams(t *testing.T) {
	f := &fakeDatagrams{err: io.EOF, arrivals: []arrival{{[][]byte{tagged(100), {0x50, 1}, tagged(120)}, 2}, {nil, 1}}}
	dev := &recDev{}
	var drops DropCounts
	var packets, byts atomic.Uint64
	in := Inbound{Dev: dev, MTU: 1500, Drops: &drops, Packets: &packets, Bytes: &byts}
	b := NewBatch(4, Headroom+2048)
	for i := range b.GSO {
		b.GSO[i] = true // left over from a stream with CapGSO; the header room holds zeros or junk
		b.Bufs[i][Headroom-VnetHdrLen] = 0xff
	}
	var results []InboundResult
	var err error
	for err == nil {
		if err = f.Wait(); err != nil {
			break
		}
		var res InboundResult
		res, err = in.ReadDatagrams(f, b)
		results = append(results, res)
	}
	if err != io.EOF || len(results) != 2 {
		t.Fatalf("ended with %v after %d batches", err, len(results))
	}
	if got := sizes(dev.got); !equalInts(got, []int{100, 120}) || dev.writes != 1 {
		t.Fatalf("TUN got %v in %d writes, want [100 120] in 1", got, dev.writes)
	}
	if drops.Load(DropMalformed) != 4 || packets.Load() != 3 || byts.Load() != 222 {
		t.Fatalf("malformed %d (want 2 bad + 1 + 1 bad), packets %d, bytes %d", drops.Load(DropMalformed), packets.Load(), byts.Load())
	}
	if results[0].Packets != 3 || results[0].Written != 2 || results[1] != (InboundResult{}) {
		t.Fatalf("results %+v", results)
	}
}

// TestInboundReadStreamEmptyFrame: a zero-length data frame (or a
// data-gso frame that is only a header) is a protocol error that ends the
// stream, after the packets before it reached the TUN in order.
func TestInboundReadStreamEmptyFrame(t *testing.T) {
	for _, empty := range [][]byte{{FrameData, 0, 0, 0}, append([]byte{FrameDataGSO, 0, 0, VnetHdrLen}, make([]byte, VnetHdrLen)...)} {
		var s []byte
		s, _ = AppendFrame(s, FrameData, tagged(100))
		s, _ = AppendFrame(s, FrameData, tagged(101))
		s = append(s, empty...)
		s, _ = AppendFrame(s, FrameData, tagged(102))
		dev := &recDev{}
		var drops DropCounts
		in := Inbound{Dev: dev, MTU: 1500, Drops: &drops}
		r := NewReader(bytes.NewReader(s), 0)
		b := NewBatch(8, Headroom+MaxPayload)
		var err error
		for range 10 {
			if _, err = in.ReadStream(r, b, true, nil, nil); err != nil {
				break
			}
		}
		if !errors.Is(err, ErrProtocol) || !equalInts(sizes(dev.got), []int{100, 101}) {
			t.Fatalf("frame %x: TUN got %v, stream ended with %v", empty[:4], sizes(dev.got), err)
		}
	}
}
