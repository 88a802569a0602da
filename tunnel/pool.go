/* Shared buffer pools: the memory side of both relay pipelines.
 *
 * A session's big buffers (the Reader's stream buffer, the Writer's encode
 * buffer, the batches a relay reads packets into) are taken from these pools
 * only while the session moves traffic and given back as soon as it goes
 * quiet, so memory follows traffic rather than the number of sessions: an
 * idle session holds no big buffer, and a reconnecting device reuses warm
 * buffers instead of allocating (and zeroing) fresh slabs. The pools are
 * sync.Pools, which keep about one buffer per core (P) hot and let the
 * garbage collector trim the rest after a burst.
 */

package tunnel

import (
	"bufio"
	"sync"
)

// bufPools holds one pool per buffer size (there are only a few sizes:
// DefaultBufferSize and MinReadBuffer). A Reader or Writer looks its pool
// up once, when it is made.
type bufPools struct {
	mu    sync.Mutex
	pools map[int]*sync.Pool
	mk    func(size int) func() any
}

func (b *bufPools) get(size int) *sync.Pool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.pools[size]; ok {
		return p
	}
	if b.pools == nil {
		b.pools = map[int]*sync.Pool{}
	}
	p := &sync.Pool{New: b.mk(size)}
	b.pools[size] = p
	return p
}

var (
	readBufs = bufPools{mk: func(size int) func() any {
		return func() any { return bufio.NewReaderSize(nil, size) }
	}}
	writeBufs = bufPools{mk: func(size int) func() any {
		return func() any { return bufio.NewWriterSize(nil, size) }
	}}
)

// BatchPool hands out Batches of Count buffers of Size bytes each. Relays
// take a batch when packets arrive and put it back when the stream or
// device has nothing more for them, so an idle session holds none.
type BatchPool struct {
	Count, Size int
	p           sync.Pool
}

// Get returns an empty batch (N = 0), reused when one is free.
func (bp *BatchPool) Get() *Batch {
	if b, ok := bp.p.Get().(*Batch); ok {
		b.N = 0
		return b
	}
	return NewBatch(bp.Count, bp.Size)
}

// Put returns b to the pool. Its buffers must be whole again (see Restore);
// the caller must not use b afterwards.
func (bp *BatchPool) Put(b *Batch) {
	if b != nil {
		bp.p.Put(b)
	}
}
