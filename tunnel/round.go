/* Write rounds: the stream side of both egress loops.
 *
 * A relay's writer goroutine (the gateway's routineWriteStream per device,
 * the laptop's routineSend) takes up to MaxRound packets off its Lanes and
 * hands them to Round.Write, which writes them with one flush: each packet
 * whole (a super-packet as FrameDataGSO) to a peer that negotiated CapGSO,
 * and for a peer without it a packet with a non-zero virtio-net header
 * (GSO, or a partial checksum) cut into segments with complete checksums by
 * Segment. Segmenting for a peer without gso lives here only.
 */

package tunnel

// MaxRound is the most queued packets one round takes. MaxSegs bounds the
// segments of one super-packet: 64 KiB cut at the smallest MSS (536) is 123.
const MaxRound, MaxSegs = 64, 128

// Round is the scratch state of one write round: Items to take the queue
// into and the view one flush writes. Pool it per round (sync.Pool) so an
// idle relay holds none.
type Round struct {
	Items []*VnetPacket // len 0, cap MaxRound: Take into Items[:0]
	view  Batch
}

// NewRound returns an empty Round.
func NewRound() *Round {
	const n = MaxRound + MaxSegs
	return &Round{
		Items: make([]*VnetPacket, 0, MaxRound),
		view:  Batch{Bufs: make([][]byte, n), Sizes: make([]int, n), GSO: make([]bool, n)},
	}
}

// RoundResult is what one Round.Write did.
type RoundResult struct {
	Packets   int    // packets written (before segmenting)
	Bytes     uint64 // their bytes
	Malformed int    // packets with a header Segment refused, dropped
}

// PacketWriter is where a Round writes: the TLS stream's *Writer, or the
// datagram path (one QUIC datagram per packet, server and client).
type PacketWriter interface {
	WritePackets(bufs [][]byte, sizes []int, gso []bool, n int, offset int) error
}

// Write writes the items (at most MaxRound, read at Headroom) to w with one
// flush, more only when segments overflow the view. keep, when not nil,
// decides each packet first; what it refuses is skipped (and counted by
// keep). peerGSO says whether the peer takes FrameDataGSO; if not, packets
// with a non-zero header are cut into segments in a batch from segs (taken
// for the first such packet, back before Write returns; Count at least
// MaxSegs, Size Headroom plus the largest segment). Write neither keeps
// nor recycles the items.
func (r *Round) Write(w PacketWriter, items []*VnetPacket, peerGSO bool, segs *BatchPool, keep func(pkt []byte) bool) (RoundResult, error) {
	var res RoundResult
	view := &r.view
	var seg *Batch
	n, used := 0, 0
	var err error
	flush := func() {
		if n > 0 && err == nil {
			err = w.WritePackets(view.Bufs, view.Sizes, view.GSO, n, Headroom)
		}
		n, used = 0, 0
	}
	for _, p := range items {
		pkt := p.Buf[Headroom : Headroom+p.Size]
		if keep != nil && !keep(pkt) {
			continue
		}
		if !p.GSO || peerGSO {
			if n == len(view.Bufs) {
				flush()
			}
			view.Bufs[n], view.Sizes[n], view.GSO[n] = p.Buf, p.Size, p.GSO
			n++
			res.Packets++
			res.Bytes += uint64(p.Size)
			continue
		}
		if seg == nil {
			seg = segs.Get()
		}
		h := DecodeVnetHdr(p.Buf[Headroom-VnetHdrLen:])
		if need := segsFor(h, p.Size); n+need > len(view.Bufs) || used+need > len(seg.Bufs) {
			flush()
		}
		k, serr := Segment(h, pkt, seg.Bufs[used:], seg.Sizes[used:], Headroom)
		if serr != nil {
			res.Malformed++
			continue
		}
		for j := 0; j < k; j++ {
			view.Bufs[n], view.Sizes[n], view.GSO[n] = seg.Bufs[used+j], seg.Sizes[used+j], false
			n++
		}
		used += k
		res.Packets++
		res.Bytes += uint64(p.Size)
	}
	flush()
	clear(view.Bufs) // hold no reference to pooled buffers
	if seg != nil {
		segs.Put(seg)
	}
	return res, err
}

// segsFor bounds from above the segments Segment cuts a size-byte packet
// with header h into (at most MaxSegs: more do not fit and Segment refuses).
func segsFor(h VnetHdr, size int) int {
	if h.GSOType&^VnetGSOECN == VnetGSONone || h.GSOSize == 0 {
		return 1
	}
	return min((size+int(h.GSOSize)-1)/int(h.GSOSize), MaxSegs)
}
