package tunnel

import (
	"bytes"
	"fmt"
	"io"
	"testing"
)

// vnetPkt is a queued packet as a relay's reader leaves it: p at Headroom,
// header h in front.
func vnetPkt(p []byte, h VnetHdr) *VnetPacket {
	v := &VnetPacket{Buf: make([]byte, Headroom+len(p)), Size: len(p), GSO: !h.IsZero()}
	h.Encode(v.Buf[Headroom-VnetHdrLen:])
	copy(v.Buf[Headroom:], p)
	return v
}

type roundFrame struct {
	typ byte
	p   []byte
}

// framesOf decodes every frame written to the stream.
func framesOf(t *testing.T, stream []byte) []roundFrame {
	t.Helper()
	r := NewReader(bytes.NewReader(stream), 0)
	var out []roundFrame
	for {
		typ, p, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, roundFrame{typ, bytes.Clone(p)})
	}
}

// TestRoundWrite: to a peer with gso every packet goes whole (a
// super-packet as data-gso behind its header); to one without, a
// super-packet is cut into MSS-sized segments with valid checksums, a
// packet with only a partial checksum gets it completed, plain packets go
// as they are; keep refuses packets; a header Segment cannot follow is
// counted malformed and the rest still goes; all of it in one flush.
func TestRoundWrite(t *testing.T) {
	super := superPacket(false, 6, 1448*3+700)
	superHdr := hdrFor(super, 6, 1448)
	partial := superPacket(false, 17, 300)
	partialHdr := VnetHdr{Flags: VnetFlagNeedsCsum, CsumStart: 20, CsumOffset: 6}
	plain := pkt(100, 1)
	refused := pkt(60, 2)
	broken := superPacket(false, 6, 3000)
	brokenHdr := hdrFor(broken, 6, 0) // segment size 0
	items := func() []*VnetPacket {
		return []*VnetPacket{vnetPkt(plain, VnetHdr{}), vnetPkt(super, superHdr), vnetPkt(refused, VnetHdr{}), vnetPkt(partial, partialHdr), vnetPkt(broken, brokenHdr)}
	}
	keep := func(p []byte) bool { return !bytes.Equal(p, refused) }
	segs := &BatchPool{Count: MaxSegs, Size: Headroom + 1500}

	t.Run("peer with gso", func(t *testing.T) {
		var cw countingWriter
		w := NewWriter(&cw, DefaultBufferSize)
		res, err := NewRound().Write(w, items(), true, segs, keep)
		if err != nil {
			t.Fatal(err)
		}
		if res.Packets != 4 || res.Malformed != 0 || res.Bytes != uint64(len(plain)+len(super)+len(partial)+len(broken)) {
			t.Fatalf("result %+v", res)
		}
		fr := framesOf(t, cw.Bytes())
		if len(fr) != 4 || fr[0].typ != FrameData || !bytes.Equal(fr[0].p, plain) ||
			fr[1].typ != FrameDataGSO || DecodeVnetHdr(fr[1].p) != superHdr || !bytes.Equal(fr[1].p[VnetHdrLen:], super) ||
			fr[2].typ != FrameDataGSO || DecodeVnetHdr(fr[2].p) != partialHdr {
			t.Fatalf("frames %d: want plain, super-packet and partial whole", len(fr))
		}
	})

	t.Run("peer without gso", func(t *testing.T) {
		var cw countingWriter
		w := NewWriter(&cw, DefaultBufferSize)
		res, err := NewRound().Write(w, items(), false, segs, keep)
		if err != nil {
			t.Fatal(err)
		}
		if res.Packets != 3 || res.Malformed != 1 || res.Bytes != uint64(len(plain)+len(super)+len(partial)) {
			t.Fatalf("result %+v", res)
		}
		fr := framesOf(t, cw.Bytes())
		if len(fr) != 1+4+1 {
			t.Fatalf("%d frames, want the plain packet, 4 segments and the partial one", len(fr))
		}
		for i, f := range fr {
			if f.typ != FrameData {
				t.Fatalf("frame %d is %s: a peer without gso got a data-gso frame", i, FrameName(f.typ))
			}
		}
		if !bytes.Equal(fr[0].p, plain) {
			t.Fatal("plain packet changed")
		}
		total := 0
		for _, f := range fr[1:5] {
			if len(f.p) > 40+1448 || !validL4(f.p) {
				t.Fatalf("segment of %d bytes, checksum ok %v", len(f.p), validL4(f.p))
			}
			total += len(f.p) - 40
		}
		if total != 1448*3+700 {
			t.Fatalf("segments carry %d bytes", total)
		}
		if !validL4(fr[5].p) {
			t.Fatal("partial checksum not completed for a peer without gso")
		}
		if cw.writes != 1 {
			t.Fatalf("%d stream writes for one round, want 1", cw.writes)
		}
	})
}

// TestRoundOverflow: a round of MaxRound super-packets for a peer without
// gso overflows the view and the segment batch many times; every segment
// still goes, in order, and nothing is counted twice.
func TestRoundOverflow(t *testing.T) {
	super := superPacket(false, 6, 536*100)
	h := hdrFor(super, 6, 536)
	items := make([]*VnetPacket, MaxRound)
	for i := range items {
		items[i] = vnetPkt(super, h)
	}
	var cw countingWriter
	w := NewWriter(&cw, DefaultBufferSize)
	res, err := NewRound().Write(w, items, false, &BatchPool{Count: MaxSegs, Size: Headroom + 1500}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fr := framesOf(t, cw.Bytes())
	if res.Packets != MaxRound || len(fr) != MaxRound*100 {
		t.Fatalf("%d packets, %d frames, want %d and %d", res.Packets, len(fr), MaxRound, MaxRound*100)
	}
}

// TestRoundWriteError: a failing stream is reported, and the round still
// counts what it would have sent no more than once.
func TestRoundWriteError(t *testing.T) {
	w := NewWriter(failWriter{}, DefaultBufferSize)
	items := []*VnetPacket{vnetPkt(pkt(100, 1), VnetHdr{}), vnetPkt(pkt(100, 2), VnetHdr{})}
	if _, err := NewRound().Write(w, items, true, nil, nil); err == nil {
		t.Fatal("a failed stream write was not reported")
	}
}

// TestRoundNoAllocs: a round allocates nothing, whole or segmented.
func TestRoundNoAllocs(t *testing.T) {
	super := superPacket(false, 6, 1448*10)
	h := hdrFor(super, 6, 1448)
	items := []*VnetPacket{vnetPkt(pkt(100, 1), VnetHdr{}), vnetPkt(super, h), vnetPkt(pkt(60, 2), VnetHdr{})}
	segs := &BatchPool{Count: MaxSegs, Size: Headroom + 1500}
	rd := NewRound()
	w := NewWriter(io.Discard, 0)
	keep := func([]byte) bool { return true }
	for _, gso := range []bool{true, false} {
		if !gso && raceEnabled {
			continue // the segment batch comes from a sync.Pool
		}
		if a := testing.AllocsPerRun(100, func() {
			if _, err := rd.Write(w, items, gso, segs, keep); err != nil {
				t.Fatal(err)
			}
		}); a != 0 {
			t.Errorf("gso=%v: %v allocs per round", gso, a)
		}
	}
}

// BenchmarkRound writes rounds of MaxRound queued packets: 1400-byte
// plain packets (the water driver's case), and 64000-byte super-packets
// whole to a gso peer or cut into 1448-byte segments for one without. MB/s
// is packet bytes.
func BenchmarkRound(b *testing.B) {
	super := superPacket(false, 6, 64000-40)
	h := hdrFor(super, 6, 1448)
	cases := []struct {
		name string
		p    []byte
		h    VnetHdr
		gso  bool
	}{
		{"plain-1400", pkt(1400, 1), VnetHdr{}, false},
		{"super-whole", super, h, true},
		{"super-segmented", super, h, false},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			items := make([]*VnetPacket, MaxRound)
			for i := range items {
				items[i] = vnetPkt(c.p, c.h)
			}
			segs := &BatchPool{Count: MaxSegs, Size: Headroom + 1500}
			rd := NewRound()
			w := NewWriter(io.Discard, 0)
			b.SetBytes(int64(len(c.p) * MaxRound))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := rd.Write(w, items, c.gso, segs, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPacketSource reads 1400-byte packets through the adapter over
// a plain Device, one packet per driver read (direct) and from batches of
// 8 (copied out).
func BenchmarkPacketSource(b *testing.B) {
	for _, batch := range []int{1, 8} {
		b.Run(fmt.Sprintf("batch-%d", batch), func(b *testing.B) {
			src := NewPacketSource(&loopDev{batch: batch, pkts: [][]byte{pkt(1400, 1)}})
			buf := make([]byte, Headroom+MaxPacket)
			b.SetBytes(1400)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := src.ReadPacket(buf, Headroom); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
