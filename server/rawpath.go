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
// shared reader fast and runs on whichever core is free.

import (
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
		ss := (*s.byAddr.Load())[dst]
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

// routineWriteStreamRaw sends what routineReadTUNRaw queued for this
// device, one flush per round.
func (ss *session) routineWriteStreamRaw() {
	// A super-packet of 64 KiB cut at the smallest MSS (536) is 123
	// segments; maxSegs leaves room for one.
	const maxRound, maxSegs = 64, 128
	items := make([]*tunnel.VnetPacket, 0, maxRound)
	view := &tunnel.Batch{Bufs: make([][]byte, maxRound+maxSegs), Sizes: make([]int, maxRound+maxSegs), GSO: make([]bool, maxRound+maxSegs)}
	seg := tunnel.NewBatch(2*maxSegs, tunnel.Headroom+ss.srv.cfg.Load().Tunnel.MTU)
	var info packet.Info
	for {
		items = ss.rawq.Take(items[:0], maxRound, 0)
		if len(items) == 0 {
			select {
			case <-ss.done:
				return
			case <-ss.rawq.Ready():
				continue
			}
		}
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
			if !ss.admit(pkt, &info, now) {
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
		for _, p := range items {
			rawPackets.Put(p)
		}
		clear(view.Bufs) // drop references to pooled buffers
		if err != nil {
			ss.close("error", err)
			return
		}
		ss.bytesOut.Add(bytes)
		ss.packetsOut.Add(uint64(len(items)))
	}
}
