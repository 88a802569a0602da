package server

// The gateway's LAN -> device path: one loop for every TUN driver.
//
//   routineReadTUN (one for the gateway)
//     Reads the shared TUN through a tunnel.PacketSource, one packet per
//     read whatever the driver: with offloads (wireguard on Linux, the
//     default) a TCP super-packet of up to 64 KiB whole behind its
//     virtio-net header; without (water, or wireguard with offloads off) a
//     plain packet behind an all-zero header. The destination address
//     picks the session through addrTable (atomic loads, no lock per
//     packet) and the packet is queued in that session's lanes
//     (tunnel.Lanes: small packets first, bounded in packets and in bytes
//     of bulk; a full queue drops, dropped:queue_full) without copying a
//     large one: a super-packet keeps the 64 KiB buffer it was read into
//     and the reader takes a fresh one; a packet up to smallPacket bytes is
//     copied into a small buffer so the queue never pins 64 KiB per ACK.
//
//   routineWriteStream (one per session)
//     Takes up to maxRound packets off the lanes, lets through only what
//     admit allows (dataplane.go: replies to flows the device opened, ICMP
//     errors about those flows, flows another device opened to it; else
//     dropped:no_flow) and writes them with one flush: super-packets whole
//     (FrameDataGSO) to a device that negotiated CapGSO, cut into MTU-sized
//     segments with complete checksums (tunnel.Segment) for one that did
//     not. Segmenting there, in the per-session goroutine, keeps the shared
//     reader fast and runs on whichever core is free. Its scratch state
//     (round) and the segment batch come from shared pools for one
//     round, so an idle session holds neither. Every write runs under a
//     deadline of the session timeout: a device that stops reading is
//     closed as "stalled" (session.go).

import (
	"sync"
	"time"

	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// deviceQueue is a session's queue of packets from the TUN: small packets
// (pings, ACKs, DNS) in a lane of their own that is sent first, so a
// download does not delay them by the whole queue; bounded by
// sessionQueuePackets packets and deviceQueueBytes bytes of bulk.
type deviceQueue = tunnel.Lanes[*tunnel.VnetPacket]

const sparseMax = 1024 // packets up to this size take the sparse lane

func newDeviceQueue() *deviceQueue {
	return tunnel.NewLanes[*tunnel.VnetPacket](sessionQueuePackets, deviceQueueBytes, sparseMax)
}

// Packet buffer classes of the queue.
const (
	smallPacket      = 2048 // packets up to this size (MTU-sized ones included) are copied into a small buffer
	deviceQueueBytes = 1 << 20
)

var tunPackets = tunnel.NewVnetPool(smallPacket)

// routineReadTUN reads the shared TUN one packet at a time and queues each
// for its session.
func (s *Server) routineReadTUN(ctx interface{ Err() error }, src tunnel.PacketSource) {
	defer s.wg.Done()
	cur := tunPackets.Get()
	defer func() { tunPackets.Put(cur) }()
	retry := tunnel.ReadRetry{Log: s.log}
	for {
		n, err := src.ReadPacket(cur.Buf, tunnel.Headroom)
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
		p := tunPackets.Detach(cur, n)
		if !ss.queue.Push(p, n) {
			ss.drops.queueFull.Add(1)
			if p != cur {
				tunPackets.Put(p)
			}
			continue
		}
		if p == cur {
			cur = tunPackets.Get()
		}
	}
}

// A super-packet of 64 KiB cut at the smallest MSS (536) is 123
// segments; maxSegs leaves room for one. maxRound is the most packets
// taken off the queue per round.
const maxRound, maxSegs = 64, 128

// round is the scratch state of one routineWriteStream round, pooled
// so that an idle session holds none of it.
type round struct {
	items []*tunnel.VnetPacket
	view  tunnel.Batch // what one flush writes: queued packets and segments
}

var rounds = sync.Pool{New: func() any {
	return &round{
		items: make([]*tunnel.VnetPacket, 0, maxRound),
		view:  tunnel.Batch{Bufs: make([][]byte, maxRound+maxSegs), Sizes: make([]int, maxRound+maxSegs), GSO: make([]bool, maxRound+maxSegs)},
	}
}}

// routineWriteStream sends what routineReadTUN queued for this device, one
// flush per round.
func (ss *session) routineWriteStream() {
	var info packet.Info
	for {
		if ss.queue.Len() == 0 {
			select {
			case <-ss.done:
				return
			case <-ss.queue.Ready():
				continue
			}
		}
		rd := rounds.Get().(*round)
		err := ss.writeRound(rd, &info)
		rounds.Put(rd)
		if err != nil {
			ss.closeWrite(err)
			return
		}
	}
}

// writeRound takes what is queued and writes it with one flush (more
// when segments overflow the view).
func (ss *session) writeRound(rd *round, info *packet.Info) error {
	items := ss.queue.Take(rd.items[:0], maxRound, 0)
	rd.items = items[:0]
	view := &rd.view
	var seg *tunnel.Batch // taken from the pool for the first super-packet to cut
	now := time.Now()
	n, used, sent := 0, 0, 0
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
		sent++
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
		tunPackets.Put(p)
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
	ss.packetsOut.Add(uint64(sent))
	return nil
}
