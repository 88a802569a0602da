package server

// The gateway's LAN -> device path: one loop for every TUN driver.
//
//   routineReadTUN (one for the gateway)
//     Runs tunnel.ReadTUN, the TUN-reader loop the laptop runs too: one
//     packet per read whatever the driver (with offloads, wireguard on Linux
//     the default, a TCP super-packet of up to 64 KiB whole behind its
//     virtio-net header; without, water or wireguard with offloads off, a
//     plain packet behind an all-zero header). The destination address
//     picks the session through addrTable (atomic loads, no lock per
//     packet) and the packet is queued in that session's tunnel.Queue
//     (small packets first, bounded in packets and in bytes of bulk; a full
//     queue drops, dropped:queue_full) without copying a large one.
//
//   routineWriteStream (one per session)
//     Takes up to tunnel.MaxRound packets off the lanes, lets through only what
//     admit allows (verdict.go verdictOut: replies to flows the device opened, ICMP
//     errors about those flows, flows another device opened to it; else
//     dropped:no_flow) and writes them with one flush: super-packets whole
//     (FrameDataGSO) to a device that negotiated CapGSO, cut into MTU-sized
//     segments with complete checksums for one that did not (tunnel.Round,
//     shared with the laptop). Segmenting there, in the per-session
//     goroutine, keeps the shared reader fast and runs on whichever core is
//     free. Its scratch state (tunnel.Round) and the segment batch come from
//     shared pools for one round, so an idle session holds neither. Every write runs under a
//     deadline of the session timeout: a device that stops reading is
//     closed as "stalled" (session.go).

import (
	"sync"
	"time"

	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// routineReadTUN reads the shared TUN one packet at a time and queues each
// for the session holding its destination.
func (s *Server) routineReadTUN(ctx interface{ Err() error }, src tunnel.PacketSource) {
	defer s.wg.Done()
	route := func(pkt []byte) (*tunnel.Queue, *tunnel.DropCounts) {
		dst, ok := packet.Dst(pkt)
		if !ok {
			return nil, nil
		}
		ss := s.byAddr.lookup(dst)
		if ss == nil {
			s.noRoute.Add(1)
			return nil, nil
		}
		return ss.queue, &ss.drops
	}
	tunnel.ReadTUN(src, s.log, func() bool { return ctx.Err() != nil || s.draining.Load() }, route, tunnel.DropQueueFull)
}

var rounds = sync.Pool{New: func() any { return tunnel.NewRound() }}

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
		rd := rounds.Get().(*tunnel.Round)
		err := ss.writeRound(rd, &info)
		rounds.Put(rd)
		if err != nil {
			ss.closeWrite(err)
			return
		}
	}
}

// writeRound takes what is queued, lets through what admit (verdict.go) allows and
// writes it with one flush (tunnel.Round: whole to a device with gso,
// segmented for one without).
func (ss *session) writeRound(rd *tunnel.Round, info *packet.Info) error {
	items := ss.queue.Take(rd.Items[:0], tunnel.MaxRound, 0)
	now := time.Now()
	res, err := rd.Write(ss.w, items, ss.gso, &ss.srv.dataPools().seg, func(pkt []byte) bool { return ss.admit(pkt, info, now) })
	for i, p := range items {
		tunnel.TUNPackets.Put(p)
		items[i] = nil
	}
	if res.Malformed > 0 {
		ss.drops.Add(tunnel.DropMalformed, uint64(res.Malformed))
	}
	if err != nil {
		return err
	}
	ss.bytesOut.Add(res.Bytes)
	ss.packetsOut.Add(uint64(res.Packets))
	return nil
}
