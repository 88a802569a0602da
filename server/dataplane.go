package server

// The gateway data plane: device -> LAN here, LAN -> device in todevice.go.
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
//   LAN -> device: routineReadTUN and routineWriteStream (todevice.go).
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

// dataPools are the gateway's shared pools of the big per-round buffers:
// batches the session readers decode device packets into (BatchSize
// buffers of a whole frame each, because coalescing (GRO) on Device.Write
// grows the first packet of a flow in place up to 64 KiB) and the segment
// batches routineWriteStream cuts super-packets into for devices without
// CapGSO (todevice.go).
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
		s.pools.seg = tunnel.BatchPool{Count: 2 * tunnel.MaxSegs, Size: tunnel.Headroom + s.cfg.Load().Tunnel.MTU}
	})
	return &s.pools
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
				ss.close(tunnel.ReasonPeerClosed, nil)
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
				ss.close(tunnel.ReasonPeerClosed, nil)
			default:
				ss.close(tunnel.ReasonError, err)
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
	if ss.backlog != nil && ss.aqm.Drop(now, ss.backlog.Bytes()+ss.r.Buffered()) { // the TLS stream's backlog; datagrams queue nowhere
		victim = tunnel.BulkVictim(b.Bufs, b.Sizes, n, tunnel.Headroom)
	}
	var bytes uint64
	keep := 0
	for i := 0; i < n; i++ {
		pkt := b.Bufs[i][tunnel.Headroom : tunnel.Headroom+b.Sizes[i]]
		bytes += uint64(len(pkt))
		if i == victim {
			ss.drops.Add(tunnel.DropCongestion, 1)
			continue
		}
		if err := packet.Parse(pkt, info); err != nil {
			ss.drops.Add(tunnel.DropMalformed, 1)
			continue
		}
		if b.GSO[i] {
			h := tunnel.DecodeVnetHdr(b.Bufs[i][tunnel.Headroom-tunnel.VnetHdrLen:])
			if tunnel.ValidateVnet(h, pkt, ss.srv.cfg.Load().Tunnel.MTU) != nil {
				ss.drops.Add(tunnel.DropMalformed, 1)
				continue
			}
		}
		if isLinkLocalControl(info) { // the laptop kernel's ND/MLD: not for the LAN (nd.go)
			continue
		}
		if info.Src != ss.addr && info.Src != ss.addr6 { // info.Src is valid; a zero addr6 matches nothing
			ss.drops.Add(tunnel.DropSpoofed, 1)
			continue
		}
		flow := conntrack.FlowOf(info)
		if g.Allows(info) {
			if !ss.flows.Add(flow, now) { // Add refreshes a known flow
				ss.drops.Add(tunnel.DropPolicy, 1) // flow table full
				continue
			}
		} else if !ss.srv.openedBy(info.Dst, flow.Reverse(), now) {
			ss.drops.Add(tunnel.DropPolicy, 1)
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
		ss.drops.Add(tunnel.DropMalformed, 1)
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
	ss.drops.Add(tunnel.DropNoFlow, 1)
	return false
}
