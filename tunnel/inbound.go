/* Inbound: the receive side of both relays, the mirror of Round.
 *
 * A relay's stream-reader goroutine (the gateway's routineReadStream per
 * device, the laptop's readStream per session) hands each batch it reads to
 * Inbound, which decides every packet and writes the survivors to the TUN:
 *
 *   1. ReadStream: Reader.ReadPackets decodes frames in place into the
 *      batch (FrameDataGSO only when the peer negotiated CapGSO), gathering
 *      until the stream has nothing buffered.
 *   2. Congestion: when the relay has fallen behind the stream (AQM over
 *      the bytes still unread behind the batch), one bulk packet is the
 *      victim (BulkVictim), dropped as DropCongestion.
 *   3. Header validation, one rule and one limit on both sides: a packet
 *      must begin as IPv4 or IPv6 (the TUN refuses the write of anything
 *      else, and wireguard's GRO a whole run holding an empty packet), and
 *      a packet behind a non-zero virtio-net header reaches the kernel
 *      only if ValidateVnet accepts the header for the tunnel MTU; else
 *      DropMalformed. A plain packet is not parsed further here (the
 *      gateway's verdict parses it) and is bounded by the frame, not the
 *      MTU: the kernel takes an oversize packet as a router does.
 *   4. Verdict, optional: the gateway passes its packet rules
 *      (anti-spoofing, policy, conntrack; server/verdict.go), the laptop
 *      none. A verdict sees only the packet, so any transport that yields
 *      packets (the TLS stream here, datagrams elsewhere) uses the same one.
 *   5. Compaction that keeps order: survivors move to the front of the
 *      batch in the order they arrived (buffers are swapped, never lost),
 *      so a drop never reorders what the TUN receives.
 *   6. WritePackets: each run of plain packets with one Device.Write (GRO),
 *      each super-packet whole.
 *
 * Deliver (steps 2 to 6) takes packets, not a stream. The datagram path
 * (CONNECT-IP, one packet per datagram) uses ReadDatagrams: its reader
 * waits for a datagram holding no batch (DatagramReader.Wait), takes a
 * batch, and ReadDatagrams takes what has arrived and delivers it without
 * AQM (nothing queues behind a lost datagram); a datagram the transport
 * could not take (empty, another context, too large) is malformed.
 */

package tunnel

import (
	"sync/atomic"
	"time"
)

// Verdict decides one packet a relay received (pkt is the IP packet; its
// virtio-net header, if any, is valid): Accept, or why it is dropped.
// DropQuiet drops without counting. now is the time the batch was read.
type Verdict func(pkt []byte, now time.Time) DropReason

// Inbound is the receive side of one session. Its fields are set before
// the first batch and changed only by the goroutine that reads (MTU after
// a pushed config); an Inbound is used by one goroutine.
type Inbound struct {
	Dev     Device      // the TUN survivors are written to
	MTU     int         // the tunnel MTU: the largest segment a virtio-net header may ask for
	Verdict Verdict     // nil: every valid packet passes (the laptop)
	Drops   *DropCounts // drops are counted here by reason
	AQM     *AQM        // nil: never drop for congestion
	// Packets and Bytes, when set, count what was received (dropped
	// packets included) before anything reaches the TUN, so a reader that
	// saw a packet on the TUN sees it counted.
	Packets, Bytes *atomic.Uint64
}

// InboundResult is what one batch did.
type InboundResult struct {
	Packets int    // packets received, dropped ones included
	Bytes   uint64 // their bytes
	Written int    // packets written to the TUN
	// WriteErr is the first error of the TUN write (the packets are lost;
	// the session goes on).
	WriteErr error
}

// Deliver decides the first n packets of b (each read at Headroom; b.GSO[i]
// for one behind a virtio-net header) and writes the survivors to Dev in
// the order they came, with one WritePackets. backlog is the bytes still
// unread behind the batch, for AQM.
func (in *Inbound) Deliver(b *Batch, n int, now time.Time, backlog int) InboundResult {
	res := InboundResult{Packets: n}
	victim := -1
	if in.AQM != nil && n > 0 && in.AQM.Drop(now, backlog) {
		victim = BulkVictim(b.Bufs, b.Sizes, n, Headroom)
	}
	keep := 0
	for i := 0; i < n; i++ {
		pkt := b.Bufs[i][Headroom : Headroom+b.Sizes[i]]
		res.Bytes += uint64(len(pkt))
		why := Accept
		switch {
		case i == victim:
			why = DropCongestion
		case len(pkt) == 0 || pkt[0]>>4 != 4 && pkt[0]>>4 != 6:
			why = DropMalformed // the kernel refuses the write (and GRO the whole run for an empty one)
		case b.GSO[i] && ValidateVnet(DecodeVnetHdr(b.Bufs[i][Headroom-VnetHdrLen:]), pkt, in.MTU) != nil:
			why = DropMalformed
		case in.Verdict != nil:
			why = in.Verdict(pkt, now)
		}
		if why != Accept {
			in.Drops.Add(why, 1)
			continue
		}
		if keep != i {
			b.Bufs[keep], b.Bufs[i] = b.Bufs[i], b.Bufs[keep]
			b.Sizes[keep], b.GSO[keep] = b.Sizes[i], b.GSO[i]
		}
		keep++
	}
	res.Written = keep
	if in.Packets != nil {
		in.Packets.Add(uint64(n))
		in.Bytes.Add(res.Bytes)
	}
	if keep > 0 {
		res.WriteErr = WritePackets(in.Dev, b, keep, Headroom)
	}
	return res
}

// ReadStream reads one batch of packets from r into b (control frames go
// to control; FrameDataGSO is accepted only when gso, the peer having
// negotiated CapGSO) and delivers it. backlog measures the bytes unread in
// the socket (nil: none); r.Buffered() is added to it. It returns what the
// batch did and the read error, after delivering what came before it.
func (in *Inbound) ReadStream(r *Reader, b *Batch, gso bool, backlog *Backlog, control func(typ byte, payload []byte) error) (InboundResult, error) {
	var gsoMarks []bool
	if gso {
		gsoMarks = b.GSO
	} else {
		clear(b.GSO) // the batch may come from a session that had CapGSO
	}
	n, err := r.ReadPackets(b.Bufs, b.Sizes, gsoMarks, Headroom, control)
	if n == 0 {
		return InboundResult{}, err
	}
	return in.Deliver(b, n, time.Now(), backlog.Bytes()+r.Buffered()), err
}

// DatagramReader is a transport that carries one packet per datagram (the
// datagram path's masque.Link).
type DatagramReader interface {
	// Wait blocks until a datagram has arrived (or the transport ended,
	// with its error) and holds nothing of the caller's, so the caller
	// takes its batch only then.
	Wait() error
	// ReadPackets copies what has arrived, up to len(bufs) packets, to
	// offset in bufs, waiting only when nothing has; bad counts the
	// datagrams it could not take.
	ReadPackets(bufs [][]byte, sizes []int, offset int) (n, bad int, err error)
}

// ReadDatagrams reads one batch of what r received into b and delivers it
// (plain packets: a datagram carries no virtio-net header; no backlog for
// AQM). The datagrams r could not take count as malformed. Call it after
// r.Wait. It returns what the batch did and r's error, after delivering
// what came before it.
func (in *Inbound) ReadDatagrams(r DatagramReader, b *Batch) (InboundResult, error) {
	clear(b.GSO) // the batch may come from a stream that had CapGSO
	n, bad, err := r.ReadPackets(b.Bufs, b.Sizes, Headroom)
	in.Drops.Add(DropMalformed, uint64(bad))
	if n == 0 {
		return InboundResult{}, err
	}
	return in.Deliver(b, n, time.Now(), 0), err
}
