package client

// The laptop -> gateway path: one loop for every TUN driver.
//
// routineReadTUN runs tunnel.ReadTUN, the TUN-reader loop the gateway runs
// too: one packet per read whatever the driver (with offloads, wireguard on
// Linux, a TCP super-packet of up to 64 KiB whole behind its virtio-net
// header; without, water or offloads off, a plain packet behind an all-zero
// header). With no session the packet is dropped (offline: nothing queues
// up while reconnecting, and nothing leaks outside the tunnel: the TUN and
// its routes stay until the client exits); without an IPv6 tunnel address
// the kernel's IPv6 chatter is dropped. Everything else goes to a
// tunnel.Queue, and the reader never waits for the network, so the
// kernel's TUN queue stays empty. The queue has two lanes: packets up to
// tunnel.SparseMax bytes (pings, ACKs, DNS, keystrokes) and bulk.
// routineSend drains the sparse lane first, then up to sendRound bytes of
// bulk, and writes the round with one TLS flush (tunnel.Round: whole,
// FrameDataGSO for super-packets, when the gateway negotiated CapGSO, else
// super-packets cut into segments). So during a large upload a ping waits
// for at most one round instead of for the megabytes of upload the kernel
// would otherwise queue ahead of it (TCP small queues allow 1 to 4 MiB per
// flow), and the bulk lane is bounded (tunnel.QueueBytes): past it the
// newest bulk packet is dropped (counted as congestion), which is the
// signal the uploading TCP flow needs.

import (
	"github.com/sallyport/sallyport/tunnel"
)

// sendRound is the most bulk bytes one round takes.
const sendRound = 256 << 10

// segBatches holds the batches a round cuts super-packets into for a
// gateway without CapGSO (MaxSegs x 64 KiB: the pushed MTU may be anything):
// taken for a round that needs one, not held for the client's life.
var segBatches = &tunnel.BatchPool{Count: tunnel.MaxSegs, Size: tunnel.Headroom + tunnel.MaxPacket}

// routineReadTUN relays TUN -> gateway for the client's whole life: one
// packet per read, queued for routineSend.
func (c *Client) routineReadTUN() {
	defer c.wg.Done()
	q := tunnel.NewQueue()
	done := make(chan struct{})
	c.wg.Add(1)
	go c.routineSend(q, done)
	defer func() { close(done) }()
	route := func(pkt []byte) (*tunnel.Queue, *tunnel.DropCounts) {
		cn := c.cur.Load()
		if cn == nil {
			c.drops.Add(tunnel.DropOffline, 1)
			return nil, nil
		}
		// Without an IPv6 tunnel address the kernel's IPv6 chatter (router
		// solicitations, MLD) has nowhere to go.
		if pkt[0]>>4 == 6 && !cn.v6 {
			return nil, nil
		}
		return q, &c.drops
	}
	tunnel.ReadTUN(tunnel.NewPacketSource(c.dev), c.log, c.net.closing.Load, route, tunnel.DropCongestion)
}

// routineSend writes what routineReadTUN queued to the live session, one
// flush per round; with no session the packets are dropped.
func (c *Client) routineSend(q *tunnel.Queue, done <-chan struct{}) {
	defer c.wg.Done()
	defer tunnel.DrainQueue(q)
	rd := tunnel.NewRound() // a few KiB of slices, no packet buffers
	for {
		items := q.Take(rd.Items[:0], tunnel.MaxRound, sendRound)
		if len(items) == 0 {
			select {
			case <-done:
				return
			case <-q.Ready():
				continue
			}
		}
		if cn := c.cur.Load(); cn == nil {
			c.drops.Add(tunnel.DropOffline, uint64(len(items)))
		} else {
			res, err := rd.Write(cn.w, items, cn.gso, segBatches, nil)
			if res.Malformed > 0 {
				c.log.Debug("dropped packets the TUN handed over with a header that cannot be segmented", "packets", res.Malformed)
			}
			if err != nil {
				cn.drop(err) // the stream reader notices and the session reconnects
			} else {
				c.bytesOut.Add(res.Bytes)
				c.packetsOut.Add(uint64(res.Packets))
			}
		}
		for i, p := range items {
			tunnel.TUNPackets.Put(p)
			items[i] = nil
		}
	}
}
