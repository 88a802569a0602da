package client

// The laptop -> gateway path: one loop for every TUN driver.
//
// routineReadTUN reads the TUN through a tunnel.PacketSource, one packet per
// read whatever the driver: with offloads (wireguard on Linux) a TCP
// super-packet of up to 64 KiB whole behind its virtio-net header, without
// (water, or offloads off) a plain packet behind an all-zero header. With
// no session the packet is dropped (nothing queues up while reconnecting,
// and nothing leaks outside the tunnel: the TUN and its routes stay until
// the client exits); without an IPv6 tunnel address the kernel's IPv6
// chatter is dropped. Everything else goes to a tunnel.Lanes queue, and
// the reader never waits for the network, so the kernel's TUN queue stays
// empty. The queue has two lanes: packets up to sparseMax bytes (pings,
// ACKs, DNS, keystrokes) and bulk. routineSend drains the sparse lane
// first, then up to sendRound bytes of bulk, and writes the round with one
// TLS flush (tunnel.Round: whole, FrameDataGSO for super-packets, when the
// gateway negotiated CapGSO, else super-packets cut into segments). So
// during a large upload a ping waits for at most one round instead of for
// the megabytes of upload the kernel would otherwise queue ahead of it (TCP
// small queues allow 1 to 4 MiB per flow), and the bulk lane is bounded
// (bulkQueueBytes): past it the newest bulk packet is dropped (counted as
// congestion), which is the signal the uploading TCP flow needs.

import (
	"github.com/sallyport/sallyport/tunnel"
)

const (
	sparseMax      = 1024    // packets up to this size take the sparse lane
	smallPacket    = 2048    // packets up to this size (MTU-sized ones included) are copied into a small buffer
	bulkQueueBytes = 1 << 20 // bulk bytes queued before new bulk is dropped
	queuePackets   = 512
	sendRound      = 256 << 10
)

type sendQueue = tunnel.Lanes[*tunnel.VnetPacket]

func newSendQueue() *sendQueue {
	return tunnel.NewLanes[*tunnel.VnetPacket](queuePackets, bulkQueueBytes, sparseMax)
}

// drainQueue returns everything still queued to the pools.
func drainQueue(q *sendQueue) {
	for _, p := range q.Take(nil, queuePackets, 0) {
		sendPackets.Put(p)
	}
}

// segBatches holds the batches a round cuts super-packets into for a
// gateway without CapGSO (MaxSegs x 64 KiB: the pushed MTU may be anything):
// taken for a round that needs one, not held for the client's life.
var segBatches = &tunnel.BatchPool{Count: tunnel.MaxSegs, Size: tunnel.Headroom + tunnel.MaxPacket}

// sendPackets holds the packets read from the TUN; packets up to
// smallPacket bytes are copied to buffers of that size, so the queue never
// pins 64 KiB per packet.
var sendPackets = tunnel.NewVnetPool(smallPacket)

// routineReadTUN relays TUN -> gateway for the client's whole life: one
// packet per read, queued for routineSend.
func (c *Client) routineReadTUN() {
	defer c.wg.Done()
	src := tunnel.NewPacketSource(c.dev)
	q := newSendQueue()
	done := make(chan struct{})
	c.wg.Add(1)
	go c.routineSend(q, done)
	defer func() { close(done) }()
	retry := tunnel.ReadRetry{Log: c.log}
	cur := sendPackets.Get()
	defer func() { sendPackets.Put(cur) }()
	for {
		n, err := src.ReadPacket(cur.Buf, tunnel.Headroom)
		if err != nil {
			if retry.Failed(err, c.net.closing.Load()) {
				continue
			}
			return
		}
		retry.OK()
		if n == 0 {
			continue
		}
		cn := c.cur.Load()
		if cn == nil {
			c.drops.Add(tunnel.DropOffline, 1)
			continue
		}
		// Without an IPv6 tunnel address the kernel's IPv6 chatter (router
		// solicitations, MLD) has nowhere to go.
		if cur.Buf[tunnel.Headroom]>>4 == 6 && !cn.v6 {
			continue
		}
		p := sendPackets.Detach(cur, n)
		if !q.Push(p, n) {
			c.drops.Add(tunnel.DropCongestion, 1)
			if p != cur {
				sendPackets.Put(p)
			}
			continue
		}
		if p == cur {
			cur = sendPackets.Get()
		}
	}
}

// routineSend writes what routineReadTUN queued to the live session, one
// flush per round; with no session the packets are dropped.
func (c *Client) routineSend(q *sendQueue, done <-chan struct{}) {
	defer c.wg.Done()
	defer drainQueue(q)
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
			sendPackets.Put(p)
			items[i] = nil
		}
	}
}
