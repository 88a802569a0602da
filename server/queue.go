package server

import (
	"sync"

	"github.com/sallyport/sallyport/tunnel"
)

// outQueue is a session's queue of packets from the TUN reader to the
// session's writer, bounded in packets (not batches). A batch pushed while
// the newest queued batch still has room is merged into it by swapping
// buffer slices, so a trickle of one-packet reads (ACKs, pings) neither
// fills the queue nor costs the writer one TLS record each, and memory stays
// at a few batches per session.
type outQueue struct {
	mu      sync.Mutex
	batches []*tunnel.Batch // FIFO; the writer takes the head whole
	packets int
	limit   int
	ready   chan struct{} // capacity 1: "there is something to take"
}

func newOutQueue(limit int) *outQueue {
	return &outQueue{limit: limit, ready: make(chan struct{}, 1)}
}

// push queues b's packets, as many as the limit allows. It returns the batch
// the caller must put back in its pool (b once merged or wholly dropped, else
// nil) and how many packets were dropped because the queue was full.
func (q *outQueue) push(b *tunnel.Batch) (spare *tunnel.Batch, dropped int) {
	q.mu.Lock()
	if room := q.limit - q.packets; b.N > room {
		// Keep what fits, drop the tail: a whole dropped batch would be a
		// burst of losses in one flow, which TCP recovers from slowly.
		dropped = b.N - max(room, 0)
		b.N = max(room, 0)
		if b.N == 0 {
			q.mu.Unlock()
			return b, dropped
		}
	}
	q.packets += b.N
	if n := len(q.batches); n > 0 && q.batches[n-1].N+b.N <= len(q.batches[n-1].Bufs) {
		tail := q.batches[n-1]
		for i := 0; i < b.N; i++ {
			tail.Bufs[tail.N], b.Bufs[i] = b.Bufs[i], tail.Bufs[tail.N]
			tail.Sizes[tail.N] = b.Sizes[i]
			tail.N++
		}
		spare = b
	} else {
		q.batches = append(q.batches, b)
	}
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return spare, dropped
}

// pop takes the oldest batch, or nil when the queue is empty.
func (q *outQueue) pop() *tunnel.Batch {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.batches) == 0 {
		return nil
	}
	b := q.batches[0]
	q.batches[0] = nil
	q.batches = q.batches[1:]
	if len(q.batches) == 0 {
		q.batches = q.batches[:0:0] // let the backing array go; it is tiny
	}
	q.packets -= b.N
	return b
}
