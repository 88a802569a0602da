package tunnel

// Batch is a set of packet buffers for one Device.Read or Reader.ReadBatch
// and the sizes of the packets in them. Packets sit at Headroom in each
// buffer. A Batch is reused for every batch of a relay direction; nothing is
// allocated per packet.
type Batch struct {
	Bufs  [][]byte // n buffers of bufSize bytes each
	Sizes []int    // packet length in Bufs[i] (at offset Headroom)
	GSO   []bool   // Bufs[i] holds a virtio-net header before its packet
	N     int      // packets currently held
}

// NewBatch allocates n buffers of bufSize bytes from one slab. Each buffer
// is capped to its own bytes, so an append to one can never spill into its
// neighbour. n and bufSize below 1 are raised to 1.
func NewBatch(n, bufSize int) *Batch {
	n = max(n, 1)
	bufSize = max(bufSize, 1)
	slab := make([]byte, n*bufSize)
	b := &Batch{Bufs: make([][]byte, n), Sizes: make([]int, n), GSO: make([]bool, n)}
	for i := range b.Bufs {
		b.Bufs[i] = slab[i*bufSize : (i+1)*bufSize : (i+1)*bufSize]
	}
	return b
}

// Packets returns the N packets held, as subslices of Bufs at offset. It
// allocates the result; it is for tests and slow paths.
func (b *Batch) Packets(offset int) [][]byte {
	out := make([][]byte, b.N)
	for i := range out {
		out[i] = b.Bufs[i][offset : offset+b.Sizes[i]]
	}
	return out
}

// Trim slices the first n buffers to end at their packets (offset+Sizes[i])
// and returns them: Device.Write writes each bufs[i][offset:] whole, so an
// untrimmed buffer would send its stale tail too, and wireguard/tun's GRO
// refuses to coalesce a packet whose buffer is longer than its IP length.
// Call Restore before the batch is read into again.
func (b *Batch) Trim(n, offset int) [][]byte {
	for i := 0; i < n; i++ {
		b.Bufs[i] = b.Bufs[i][:offset+b.Sizes[i]]
	}
	return b.Bufs[:n]
}

// Restore gives every buffer its full capacity again after Trim (and after
// a Device.Write, which may grow or swap the buffers while coalescing).
func (b *Batch) Restore() { b.restore(len(b.Bufs)) }

// restore is Restore for the first n buffers, all a write of n packets can
// have touched: a batch has up to 128 buffers and usually holds a few
// super-packets.
func (b *Batch) restore(n int) {
	for i := range min(n, len(b.Bufs)) {
		b.Bufs[i] = b.Bufs[i][:cap(b.Bufs[i])]
	}
}
