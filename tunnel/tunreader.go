/* The TUN-reader loop both relays run (the laptop's routineReadTUN, the
 * gateway's routineReadTUN): read the TUN through a PacketSource one packet
 * per read, whatever the driver (a TCP super-packet whole behind its
 * virtio-net header with offloads, a plain packet behind an all-zero header
 * without); ask Route which queue the packet goes to (the laptop: its one
 * send queue, or none while offline; the gateway: the queue of the session
 * holding the destination address); queue it without copying a large one (a
 * super-packet keeps the 64 KiB buffer it was read into and the reader takes
 * a fresh one; a packet up to SmallPacket bytes is copied into a small
 * buffer so the queue never pins 64 KiB per ACK). The reader never waits for
 * the network, so the kernel's TUN queue stays empty; a full queue drops the
 * packet, which is the signal the sending TCP flow needs.
 */

package tunnel

import "log/slog"

// The send queues of both relays: two lanes (packets up to SparseMax bytes
// first, then bulk), at most QueuePackets packets and QueueBytes bytes of
// bulk; packets up to SmallPacket bytes are copied into small buffers.
const (
	SparseMax    = 1024
	SmallPacket  = 2048 // MTU-sized packets included
	QueuePackets = 512
	QueueBytes   = 1 << 20
)

// Queue is a relay's queue of packets read from the TUN, drained by its
// writer goroutine (Round.Write).
type Queue = Lanes[*VnetPacket]

// NewQueue returns an empty send queue.
func NewQueue() *Queue { return NewLanes[*VnetPacket](QueuePackets, QueueBytes, SparseMax) }

// TUNPackets is the pool both relays read TUN packets into and queue them
// from; a queue's packets go back to it once written or dropped.
var TUNPackets = NewVnetPool(SmallPacket)

// DrainQueue returns everything still queued in q to TUNPackets.
func DrainQueue(q *Queue) {
	for _, p := range q.Take(nil, QueuePackets, 0) {
		TUNPackets.Put(p)
	}
}

// Route picks the queue a packet read from the TUN goes to, and the
// counters a full queue is counted in; nil drops the packet (Route counts
// it if it should be).
type Route func(pkt []byte) (*Queue, *DropCounts)

// ReadTUN reads src until it is closed or stopping reports true after a
// read error, queueing each packet where route says; a full queue counts
// full. Read errors are logged and retried (ReadRetry).
func ReadTUN(src PacketSource, log *slog.Logger, stopping func() bool, route Route, full DropReason) {
	retry := ReadRetry{Log: log}
	cur := TUNPackets.Get()
	defer func() { TUNPackets.Put(cur) }()
	for {
		n, err := src.ReadPacket(cur.Buf, Headroom)
		if err != nil {
			if retry.Failed(err, stopping()) {
				continue
			}
			return
		}
		retry.OK()
		if n == 0 {
			continue
		}
		q, drops := route(cur.Buf[Headroom : Headroom+n])
		if q == nil {
			continue
		}
		p := TUNPackets.Detach(cur, n)
		if !q.Push(p, n) {
			drops.Add(full, 1)
			if p != cur {
				TUNPackets.Put(p)
			}
			continue
		}
		if p == cur {
			cur = TUNPackets.Get()
		}
	}
}
