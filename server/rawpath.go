package server

// The gateway's LAN -> device path with GSO pass-through ("raw mode").
//
// When the gateway's TUN has offloads (wireguard driver on Linux),
// routineReadTUNRaw reads each packet as the kernel hands it over: a TCP
// super-packet of up to 64 KiB behind its virtio-net header, or a plain
// packet. It looks up the destination session and queues the packet
// itself, without copying a large one: a super-packet keeps the 64 KiB
// buffer it was read into and the reader takes a fresh one; a small packet
// is copied into a small buffer so the queue never pins 64 KiB per ACK.
// The session's rawQueue is bounded in packets and in bytes.
//
// routineWriteStreamRaw, one per session, takes everything queued, applies
// the same conntrack check as the batch path, and writes it with one flush:
// super-packets whole (FrameDataGSO) to a device that negotiated CapGSO, cut
// into MTU-sized segments with complete checksums (tunnel.Segment) for one
// that did not. Segmenting there, in the per-session goroutine, keeps the
// shared reader fast and runs on whichever core is free. Its scratch state
// (rawRound) and the segment batch come from shared pools for one round,
// so an idle session holds neither.

import (
	"sync"
	"time"

	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// rawQueue is a session's queue in raw mode: small packets (pings, ACKs,
// DNS) in a lane of their own that is sent first, so a download does not
// delay them by the whole queue; bounded by sessionQueuePackets packets
// and rawQueueBytes bytes of bulk.
type rawQueue = tunnel.Lanes[*tunnel.VnetPacket]

const sparseRaw = 1024

func newRawQueue() *rawQueue {
	return tunnel.NewLanes[*tunnel.VnetPacket](sessionQueuePackets, rawQueueBytes, sparseRaw)
}

// Packet buffer classes for raw mode.
const (
	smallRaw      = 2048 // packets up to this size are copied into a small buffer
	rawQueueBytes = 1 << 20
)

var rawPackets = tunnel.NewVnetPool(smallRaw)

// routineReadTUNRaw reads the shared TUN one unsplit packet at a time and
// queues each for its session.
func (s *Server) routineReadTUNRaw(ctx interface{ Err() error }, dev tunnel.VnetDevice) {
	defer s.wg.Done()
	cur := rawPackets.Get()
	defer func() { rawPackets.Put(cur) }()
	retry := tunnel.ReadRetry{Log: s.log}
	for {
		n, err := dev.ReadVnet(cur.Buf, tunnel.Headroom)
		if err != nil {
			if retry.Failed(err, ctx.Err() != nil || s.draining.Load()) {
				continue
			}
			return
		}
		retry.OK()
		pkt := cur.Buf[tunnel.Headroom : tunnel.Headroom+n]
		dst, ok := packet.Dst(pkt)
		if !ok {
			continue
		}
		ss := s.byAddr.lookup(dst)
		if ss == nil {
			s.noRoute.Add(1)
			continue
		}
		p := rawPackets.Detach(cur, n)
		if !ss.rawq.Push(p, n) {
			ss.drops.queueFull.Add(1)
			if p != cur {
				rawPackets.Put(p)
			}
			continue
		}
		if p == cur {
			cur = rawPackets.Get()
		}
	}
}

// A super-packet of 64 KiB cut at the smallest MSS (536) is 123
// segments; maxSegs leaves room for one. maxRound is the most packets
// taken off the queue per round.
const maxRound, maxSegs = 64, 128

// rawRound is the scratch state of one routineWriteStreamRaw round, pooled
// so that an idle session holds none of it.
type rawRound struct {
	items []*tunnel.VnetPacket
	view  tunnel.Batch // what one flush writes: queued packets and segments
}

var rawRounds = sync.Pool{New: func() any {
	return &rawRound{
		items: make([]*tunnel.VnetPacket, 0, maxRound),
		view:  tunnel.Batch{Bufs: make([][]byte, maxRound+maxSegs), Sizes: make([]int, maxRound+maxSegs), GSO: make([]bool, maxRound+maxSegs)},
	}
}}

// routineWriteStreamRaw sends what routineReadTUNRaw queued for this
// device, one flush per round.
func (ss *session) routineWriteStreamRaw() {
	var info packet.Info
	for {
		if ss.rawq.Len() == 0 {
			select {
			case <-ss.done:
				return
			case <-ss.rawq.Ready():
				continue
			}
		}
		rd := rawRounds.Get().(*rawRound)
		err := ss.writeRawRound(rd, &info)
		rawRounds.Put(rd)
		if err != nil {
			ss.closeWrite(err)
			return
		}
	}
}

// writeRawRound takes what is queued and writes it with one flush (more
// when segments overflow the view).
func (ss *session) writeRawRound(rd *rawRound, info *packet.Info) error {
	items := ss.rawq.Take(rd.items[:0], maxRound, 0)
	rd.items = items[:0]
	view := &rd.view
	var seg *tunnel.Batch // taken from the pool for the first super-packet to cut
	now := time.Now()
	n, used := 0, 0
	var bytes uint64
	var err error
	flush := func() {
		if n > 0 && err == nil {
			err = ss.w.WritePackets(view.Bufs, view.Sizes, view.GSO, n, tunnel.Headroom)
		}
		n, used = 0, 0
	}
	for _, p := range items {
		pkt := p.Buf[tunnel.Headroom : tunnel.Headroom+p.Size]
		if !ss.admit(pkt, info, now) {
			continue
		}
		bytes += uint64(p.Size)
		if !p.GSO || ss.gso {
			if n == len(view.Bufs) {
				flush()
			}
			view.Bufs[n], view.Sizes[n], view.GSO[n] = p.Buf, p.Size, p.GSO
			n++
			continue
		}
		// A device without CapGSO gets MTU-sized segments.
		if seg == nil {
			seg = ss.srv.dataPools().seg.Get()
		}
		h := tunnel.DecodeVnetHdr(p.Buf[tunnel.Headroom-tunnel.VnetHdrLen:])
		if n > maxRound || used > maxSegs {
			flush()
		}
		k, serr := tunnel.Segment(h, pkt, seg.Bufs[used:], seg.Sizes[used:], tunnel.Headroom)
		if serr != nil {
			ss.drops.malformed.Add(1)
			continue
		}
		for j := 0; j < k; j++ {
			view.Bufs[n], view.Sizes[n], view.GSO[n] = seg.Bufs[used+j], seg.Sizes[used+j], false
			n++
		}
		used += k
	}
	flush()
	for i, p := range items {
		rawPackets.Put(p)
		items[i] = nil
	}
	clear(view.Bufs) // drop references to pooled buffers
	if seg != nil {
		ss.srv.dataPools().seg.Put(seg)
	}
	if err != nil {
		return err
	}
	ss.bytesOut.Add(bytes)
	ss.packetsOut.Add(uint64(len(items)))
	return nil
}
