package client

// The laptop's send path in raw mode (TUN with offloads).
//
// routineReadTUN hands each packet it reads, unsplit, to a tunnel.Lanes
// queue and never waits for the network, so the kernel's TUN queue stays
// empty. The queue has two lanes: packets up to sparseMax bytes (pings,
// ACKs, DNS, keystrokes) and bulk. routineSend drains the sparse lane first,
// then up to sendRound bytes of bulk, with one TLS flush per round. So during a
// large upload a ping waits for at most one round instead of for the
// megabytes of upload the kernel would otherwise queue ahead of it (TCP
// small queues allow 1 to 4 MiB per flow), and the bulk lane is bounded
// (bulkQueueBytes): past it the newest bulk packet is dropped (counted as
// congestion), which is the signal the uploading TCP flow needs.

import (
	"github.com/sallyport/sallyport/tunnel"
)

const (
	sparseMax      = 1024    // packets up to this size take the sparse lane
	bulkQueueBytes = 1 << 20 // bulk bytes queued before new bulk is dropped
	queuePackets   = 512
	sendRound      = 256 << 10
	sendRoundPkts  = 64
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

// segBatches holds the batches sendRound cuts super-packets into for a
// gateway without CapGSO (128 x 64 KiB): taken for a round that needs one,
// not held for the client's life.
var segBatches = &tunnel.BatchPool{Count: 128, Size: tunnel.Headroom + tunnel.MaxPacket}

// sendPackets holds the packets read from the TUN; small ones are copied
// to sparseMax-byte buffers.
var sendPackets = tunnel.NewVnetPool(sparseMax)

// readTUNRaw is routineReadTUN for a device with offloads: one unsplit
// packet per read, queued for routineSend.
func (c *Client) readTUNRaw(dev tunnel.VnetDevice) {
	q := newSendQueue()
	done := make(chan struct{})
	c.wg.Add(1)
	go c.routineSend(q, done)
	defer func() { close(done) }()
	retry := tunnel.ReadRetry{Log: c.log}
	cur := sendPackets.Get()
	defer func() { sendPackets.Put(cur) }()
	for {
		n, err := dev.ReadVnet(cur.Buf, tunnel.Headroom)
		if err != nil {
			if retry.Failed(err, c.net.closing.Load()) {
				continue
			}
			return
		}
		retry.OK()
		cn := c.cur.Load()
		if cn == nil {
			c.droppedOffline.Add(1)
			continue
		}
		// Without an IPv6 tunnel address the kernel's IPv6 chatter (router
		// solicitations, MLD) has nowhere to go.
		if cur.Buf[tunnel.Headroom]>>4 == 6 && !cn.v6 {
			continue
		}
		p := sendPackets.Detach(cur, n)
		if !q.Push(p, n) {
			c.droppedCongestion.Add(1)
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

// routineSend writes what readTUNRaw queued to the live session, one flush
// per round; with no session the packets are dropped.
func (c *Client) routineSend(q *sendQueue, done <-chan struct{}) {
	defer c.wg.Done()
	defer drainQueue(q)
	items := make([]*tunnel.VnetPacket, 0, sendRoundPkts)
	view := &tunnel.Batch{Bufs: make([][]byte, sendRoundPkts), Sizes: make([]int, sendRoundPkts), GSO: make([]bool, sendRoundPkts)}
	for {
		items = q.Take(items[:0], sendRoundPkts, sendRound)
		if len(items) == 0 {
			select {
			case <-done:
				return
			case <-q.Ready():
				continue
			}
		}
		if cn := c.cur.Load(); cn == nil {
			c.droppedOffline.Add(uint64(len(items)))
		} else if err := c.sendRound(cn, items, view); err != nil {
			cn.drop(err) // the stream reader notices and the session reconnects
		}
		for i, p := range items {
			sendPackets.Put(p)
			items[i] = nil
		}
		clear(view.Bufs)
	}
}

// sendRound writes items to cn: whole with their headers when the gateway
// negotiated CapGSO, else cut into plain segments here.
func (c *Client) sendRound(cn *conn, items []*tunnel.VnetPacket, view *tunnel.Batch) error {
	var bytes uint64
	for _, p := range items {
		bytes += uint64(p.Size)
	}
	if cn.gso {
		for i, p := range items {
			view.Bufs[i], view.Sizes[i], view.GSO[i] = p.Buf, p.Size, p.GSO
		}
		if err := cn.w.WritePackets(view.Bufs, view.Sizes, view.GSO, len(items), tunnel.Headroom); err != nil {
			return err
		}
	} else {
		seg := segBatches.Get()
		defer segBatches.Put(seg)
		for _, p := range items {
			h := tunnel.DecodeVnetHdr(p.Buf[tunnel.Headroom-tunnel.VnetHdrLen:])
			k, err := tunnel.Segment(h, p.Buf[tunnel.Headroom:tunnel.Headroom+p.Size], seg.Bufs, seg.Sizes, tunnel.Headroom)
			if err != nil {
				c.log.Debug("segment packet failed", "err", err)
				continue
			}
			if err := cn.w.WriteBatch(seg.Bufs, seg.Sizes, k, tunnel.Headroom); err != nil {
				return err
			}
		}
	}
	c.bytesOut.Add(bytes)
	c.packetsOut.Add(uint64(len(items)))
	return nil
}
