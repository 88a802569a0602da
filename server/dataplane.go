package server

// The gateway data plane.
//
// One TUN device is shared by all sessions; each session is one TLS stream.
//
//   device -> LAN: routineReadStream (one per session)
//     Waits for the stream in a small read, then takes a batch and a 256 KiB
//     stream buffer from shared pools (given back after the round, so an
//     idle session holds neither). Reader.ReadBatch decodes frames in place
//     and copies each packet into the batch with Headroom in front,
//     gathering until the stream has nothing buffered. Each packet is then
//     checked: IPv6 neighbour discovery and MLD are dropped uncounted
//     (nd.go), the source must be one of the session's addresses (else
//     dropped:spoofed),
//     destination must be allowed by the device's grant (the flow is then
//     recorded in the session's conntrack) or be a reply to a flow the
//     destination device opened (else dropped:policy). Passing packets are
//     compacted to the front of the batch and written by
//     tunnel.WritePackets: each run of plain packets with ONE Device.Write
//     (wireguard/tun coalesces TCP segments, GRO), each super-packet whole.
//     When the gateway falls behind the stream, tunnel.AQM drops one bulk
//     packet now and then (dropped:congestion) so the unread backlog, and
//     the latency of everything behind it, stays short.
//
//   LAN -> device: routineReadTUN (one for the gateway)
//     Device.Read fills a pooled batch (BatchSize packets, Headroom in front).
//     Each packet's destination picks its session through addrTable (three
//     atomic loads, no lock per packet); packets move into that session's outgoing
//     batch by swapping buffer slices, never by copying bytes. Each outgoing
//     batch is pushed to its session's outQueue without blocking: it merges
//     into the newest queued batch when that has room, and a queue at its
//     packet limit drops it (dropped:queue_full) rather than delaying every
//     other device.
//
//   routineWriteStream (one per session)
//     Takes a batch off the queue, lets through only replies to flows the
//     device opened, ICMP errors about those flows (path MTU), or flows
//     another device opened to it under its own policy (else
//     dropped:no_flow), writes every packet as a frame into the
//     buffered writer and flushes once per batch (one large TLS write).
//     Every write runs under a deadline of the session timeout: a device
//     that stops reading is closed as "stalled" (session.go).
//
// Buffers come from sync.Pools of whole batches; nothing on these paths
// allocates per packet, and an idle session holds none of them.

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/sallyport/sallyport/server/conntrack"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// tunBatches hands out batches for TUN reads: BatchSize packets of up to
// Headroom+MTU bytes (wireguard/tun splits GSO reads into MTU-sized
// segments). Stream reads use a larger per-session batch instead, because
// coalescing (GRO) on Device.Write grows the first packet of a flow in place
// up to 64 KiB.
type batchPool struct {
	count, size int
	p           sync.Pool
}

func (bp *batchPool) get() *tunnel.Batch {
	if b, ok := bp.p.Get().(*tunnel.Batch); ok {
		b.N = 0
		return b
	}
	return tunnel.NewBatch(bp.count, bp.size)
}

func (bp *batchPool) put(b *tunnel.Batch) { bp.p.Put(b) }

// dataPools are the gateway's shared pools of the big per-round buffers:
// batches the session readers decode device packets into (BatchSize
// buffers of a whole frame each, because coalescing (GRO) on Device.Write
// grows the first packet of a flow in place up to 64 KiB) and the segment
// batches raw mode cuts super-packets into for devices without CapGSO.
// Sessions take them per round of traffic, so memory follows traffic, not
// the number of sessions.
type dataPools struct {
	once   sync.Once
	stream tunnel.BatchPool
	seg    tunnel.BatchPool
}

// dataPools sizes the pools on first use (the TUN is open by then).
func (s *Server) dataPools() *dataPools {
	s.pools.once.Do(func() {
		s.pools.stream = tunnel.BatchPool{Count: s.dev.BatchSize(), Size: tunnel.Headroom + tunnel.MaxPayload}
		s.pools.seg = tunnel.BatchPool{Count: 2 * maxSegs, Size: tunnel.Headroom + s.cfg.Load().Tunnel.MTU}
	})
	return &s.pools
}

// routineReadTUN reads packets from the shared TUN and hands each session
// the packets addressed to it, a batch at a time.
func (s *Server) routineReadTUN(ctx interface{ Err() error }) {
	defer s.wg.Done()
	type pending struct {
		ss *session
		b  *tunnel.Batch
	}
	out := make([]pending, 0, 8)
	in := s.tunBatches.get()
	defer s.tunBatches.put(in)
	retry := tunnel.ReadRetry{Log: s.log}
	for {
		n, err := s.dev.Read(in.Bufs, in.Sizes, tunnel.Headroom)
		if err != nil {
			if retry.Failed(err, ctx.Err() != nil || s.draining.Load()) {
				continue
			}
			return
		}
		retry.OK()
		var last netip.Addr
		var lastSS *session
		for i := 0; i < n; i++ {
			pkt := in.Bufs[i][tunnel.Headroom : tunnel.Headroom+in.Sizes[i]]
			dst, ok := packet.Dst(pkt)
			if !ok {
				continue
			}
			ss := lastSS
			if dst != last || ss == nil {
				ss = s.byAddr.lookup(dst)
				last, lastSS = dst, ss
			}
			if ss == nil {
				s.noRoute.Add(1)
				continue
			}
			j := 0
			for j < len(out) && out[j].ss != ss {
				j++
			}
			if j == len(out) {
				out = append(out, pending{ss, s.tunBatches.get()})
			}
			ob := out[j].b
			ob.Bufs[ob.N], in.Bufs[i] = in.Bufs[i], ob.Bufs[ob.N]
			ob.Sizes[ob.N] = in.Sizes[i]
			ob.N++
			if ob.N == len(ob.Bufs) { // full: ship it now
				s.offer(ss, ob)
				out[j].b = s.tunBatches.get()
			}
		}
		for j := range out {
			if out[j].b.N > 0 {
				s.offer(out[j].ss, out[j].b)
			} else {
				s.tunBatches.put(out[j].b)
			}
			out[j] = pending{}
		}
		out = out[:0]
	}
}

// offer queues b for ss without blocking.
func (s *Server) offer(ss *session, b *tunnel.Batch) {
	select {
	case <-ss.done:
		s.tunBatches.put(b)
		return
	default:
	}
	spare, dropped := ss.queue.push(b)
	if dropped > 0 {
		ss.drops.queueFull.Add(uint64(dropped))
	}
	if spare != nil {
		s.tunBatches.put(spare)
	}
}

// routineReadStream decodes the device's frames, filters the packets and
// writes them to the TUN in batches. It waits for the stream in a small
// read and takes a batch from the shared pool only once bytes arrived,
// giving it back after each round, so an idle session holds none.
func (ss *session) routineReadStream() {
	pool := &ss.srv.dataPools().stream
	var info packet.Info
	for {
		ss.r.Wait()
		b := pool.Get()
		var gso []bool
		if ss.gso {
			gso = b.GSO
		} else {
			clear(b.GSO) // the batch may come from a session that had CapGSO
		}
		n, err := ss.r.ReadPackets(b.Bufs, b.Sizes, gso, tunnel.Headroom, ss.onControl)
		if n > 0 {
			ss.lastRecv.Store(time.Now().UnixNano())
			ss.forwardBatch(b, n, &info)
		}
		pool.Put(b)
		if err != nil {
			var pc *peerClosed
			switch {
			case errors.As(err, &pc):
				ss.close("peer-closed", nil)
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
				ss.close("peer-closed", nil)
			default:
				ss.close("error", err)
			}
			return
		}
		if n == 0 {
			ss.lastRecv.Store(time.Now().UnixNano()) // control frames only
		}
	}
}

// forwardBatch filters the first n packets of b (device -> network) and
// writes the survivors to the TUN with one call.
func (ss *session) forwardBatch(b *tunnel.Batch, n int, info *packet.Info) {
	g := ss.grant.Load()
	now := time.Now()
	victim := -1
	if ss.aqm.Drop(now, ss.backlog.Bytes()+ss.r.Buffered()) {
		victim = tunnel.BulkVictim(b.Bufs, b.Sizes, n, tunnel.Headroom)
	}
	var bytes uint64
	keep := 0
	for i := 0; i < n; i++ {
		pkt := b.Bufs[i][tunnel.Headroom : tunnel.Headroom+b.Sizes[i]]
		bytes += uint64(len(pkt))
		if i == victim {
			ss.drops.congestion.Add(1)
			continue
		}
		if err := packet.Parse(pkt, info); err != nil {
			ss.drops.malformed.Add(1)
			continue
		}
		if b.GSO[i] {
			h := tunnel.DecodeVnetHdr(b.Bufs[i][tunnel.Headroom-tunnel.VnetHdrLen:])
			if tunnel.ValidateVnet(h, pkt, ss.srv.cfg.Load().Tunnel.MTU) != nil {
				ss.drops.malformed.Add(1)
				continue
			}
		}
		if isLinkLocalControl(info) { // the laptop kernel's ND/MLD: not for the LAN (nd.go)
			continue
		}
		if info.Src != ss.addr && info.Src != ss.addr6 { // info.Src is valid; a zero addr6 matches nothing
			ss.drops.spoofed.Add(1)
			continue
		}
		flow := conntrack.FlowOf(info)
		if g.Allows(info) {
			if !ss.flows.Add(flow, now) { // Add refreshes a known flow
				ss.drops.policy.Add(1) // flow table full
				continue
			}
		} else if !ss.srv.openedBy(info.Dst, flow.Reverse(), now) {
			ss.drops.policy.Add(1)
			continue
		}
		b.Bufs[keep], b.Bufs[i] = b.Bufs[i], b.Bufs[keep]
		b.Sizes[keep], b.GSO[keep] = b.Sizes[i], b.GSO[i]
		keep++
	}
	ss.bytesIn.Add(bytes)
	ss.packetsIn.Add(uint64(n))
	if keep == 0 {
		return
	}
	if err := tunnel.WritePackets(ss.srv.dev, b, keep, tunnel.Headroom); err != nil && !ss.srv.draining.Load() {
		ss.log.Debug("write TUN failed", "err", err, "packets", keep)
	}
}

// openedBy reports whether the device session holding addr opened flow.
func (s *Server) openedBy(addr netip.Addr, flow conntrack.Flow, now time.Time) bool {
	other := s.byAddr.lookup(addr)
	return other != nil && other.flows.Has(flow, now)
}

// admit decides whether a packet from the network may go to the device:
// a reply to a flow the device opened (of ICMP only the echo reply to its
// request), an ICMP error quoting such a flow (path MTU; see icmperr.go),
// or a flow another device opened to it under its own policy. It counts
// what it refuses.
func (ss *session) admit(pkt []byte, info *packet.Info, now time.Time) bool {
	if packet.Parse(pkt, info) != nil {
		ss.drops.malformed.Add(1)
		return false
	}
	flow := conntrack.FlowOf(info)
	var ok bool
	if isICMPError(info) { // for the flow it quotes, never as a reply of its own
		addr := ss.addr
		if info.Version == 6 && ss.addr6.IsValid() {
			addr = ss.addr6
		}
		ok = admitICMPError(pkt, info, addr, ss.flows, now)
	} else {
		ok = ss.flows.Has(flow.Reverse(), now)
	}
	if ok || ss.srv.openedBy(info.Src, flow, now) {
		return true
	}
	ss.drops.noFlow.Add(1)
	return false
}

// routineWriteStream sends the batches the TUN reader queued for this
// device, one flush per batch.
func (ss *session) routineWriteStream() {
	var info packet.Info
	for {
		b := ss.queue.pop()
		if b == nil {
			select {
			case <-ss.done:
				return
			case <-ss.queue.ready:
				continue
			}
		}
		now := time.Now()
		keep := 0
		var bytes uint64
		for i := 0; i < b.N; i++ {
			pkt := b.Bufs[i][tunnel.Headroom : tunnel.Headroom+b.Sizes[i]]
			if !ss.admit(pkt, &info, now) {
				continue
			}
			b.Bufs[keep], b.Bufs[i] = b.Bufs[i], b.Bufs[keep]
			b.Sizes[keep] = b.Sizes[i]
			bytes += uint64(len(pkt))
			keep++
		}
		var err error
		if keep > 0 {
			err = ss.w.WriteBatch(b.Bufs, b.Sizes, keep, tunnel.Headroom)
		}
		ss.srv.tunBatches.put(b)
		if err != nil {
			ss.closeWrite(err)
			return
		}
		ss.bytesOut.Add(bytes)
		ss.packetsOut.Add(uint64(keep))
	}
}
