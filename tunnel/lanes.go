package tunnel

import "sync"

// Lanes is the bounded queue between a relay's reader goroutine and its
// writer goroutine, with two FIFO lanes: packets up to SparseMax bytes
// (pings, ACKs, DNS, keystrokes) and bulk. Take serves the sparse lane
// first, so a small packet waits for at most one writer round instead of
// for everything a bulk transfer has queued. The queue holds at most
// maxPackets packets and maxBulkBytes bytes of bulk; Push refuses beyond
// that, and dropping is the caller's congestion signal.
type Lanes[T any] struct {
	mu                  sync.Mutex
	sparse, bulk        []lanesItem[T]
	bulkBytes           int
	maxPackets, maxBulk int
	sparseMax           int
	ready               chan struct{}
}

type lanesItem[T any] struct {
	v    T
	size int
}

// NewLanes returns an empty queue with the given bounds.
func NewLanes[T any](maxPackets, maxBulkBytes, sparseMax int) *Lanes[T] {
	return &Lanes[T]{maxPackets: maxPackets, maxBulk: maxBulkBytes, sparseMax: sparseMax, ready: make(chan struct{}, 1)}
}

// Ready has a value after a Push; a writer waits on it when Take is empty.
func (q *Lanes[T]) Ready() <-chan struct{} { return q.ready }

// Push queues v of size bytes; false when the queue is full.
func (q *Lanes[T]) Push(v T, size int) bool {
	q.mu.Lock()
	if len(q.sparse)+len(q.bulk) >= q.maxPackets || (size > q.sparseMax && q.bulkBytes+size > q.maxBulk) {
		q.mu.Unlock()
		return false
	}
	if size <= q.sparseMax {
		q.sparse = append(q.sparse, lanesItem[T]{v, size})
	} else {
		q.bulk = append(q.bulk, lanesItem[T]{v, size})
		q.bulkBytes += size
	}
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// Take appends up to max queued values to dst, sparse ones first, then bulk
// up to roundBytes bytes (0: no byte limit; one bulk packet always fits).
func (q *Lanes[T]) Take(dst []T, max, roundBytes int) []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	k := 0
	for k < len(q.sparse) && len(dst) < max {
		dst = append(dst, q.sparse[k].v)
		k++
	}
	q.sparse = shift(q.sparse, k)
	bytes, j := 0, 0
	for j < len(q.bulk) && len(dst) < max && (roundBytes == 0 || j == 0 || bytes+q.bulk[j].size <= roundBytes) {
		bytes += q.bulk[j].size
		dst = append(dst, q.bulk[j].v)
		j++
	}
	q.bulkBytes -= bytes
	q.bulk = shift(q.bulk, j)
	return dst
}

// Len is the number of queued values.
func (q *Lanes[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.sparse) + len(q.bulk)
}

// shift drops the first k items, clearing them so the queue holds no
// references to values it gave away.
func shift[T any](s []lanesItem[T], k int) []lanesItem[T] {
	clear(s[:k])
	return append(s[:0], s[k:]...)
}
