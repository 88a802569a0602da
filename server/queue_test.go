package server

import (
	"testing"

	"github.com/sallyport/sallyport/tunnel"
)

func batchOf(t *testing.T, capacity int, ids ...byte) *tunnel.Batch {
	t.Helper()
	b := tunnel.NewBatch(capacity, 32)
	for _, id := range ids {
		b.Bufs[b.N][tunnel.Headroom] = id
		b.Sizes[b.N] = 1
		b.N++
	}
	return b
}

func ids(b *tunnel.Batch) []byte {
	var out []byte
	for i := 0; i < b.N; i++ {
		out = append(out, b.Bufs[i][tunnel.Headroom])
	}
	return out
}

func TestOutQueue(t *testing.T) {
	q := newOutQueue(6)
	if q.pop() != nil {
		t.Fatal("empty queue popped a batch")
	}
	// Small batches merge into the tail while it has room.
	for _, id := range []byte{1, 2, 3} {
		spare, dropped := q.push(batchOf(t, 4, id))
		if dropped != 0 || (id > 1 && spare == nil) || (id == 1 && spare != nil) {
			t.Fatalf("push %d: spare %v dropped %d", id, spare != nil, dropped)
		}
	}
	select {
	case <-q.ready:
	default:
		t.Fatal("no ready signal")
	}
	// A batch that does not fit the tail starts a new one.
	if spare, _ := q.push(batchOf(t, 4, 4, 5)); spare != nil {
		t.Fatal("batch that does not fit the tail was merged")
	}
	// Over the packet limit (5 queued + 2 > 6): the one that fits is kept
	// (merged into the tail), the rest dropped.
	if spare, dropped := q.push(batchOf(t, 4, 6, 7)); dropped != 1 || spare == nil {
		t.Fatalf("over limit: dropped %d", dropped)
	}
	// Full: everything dropped.
	if spare, dropped := q.push(batchOf(t, 4, 8)); dropped != 1 || spare == nil {
		t.Fatalf("full: dropped %d", dropped)
	}
	if got := ids(q.pop()); string(got) != "\x01\x02\x03" {
		t.Fatalf("first pop %v", got)
	}
	if got := ids(q.pop()); string(got) != "\x04\x05\x06" {
		t.Fatalf("second pop %v", got)
	}
	if q.pop() != nil || q.packets != 0 {
		t.Fatalf("queue not empty: %d packets", q.packets)
	}
}

func TestRawQueue(t *testing.T) {
	q := newRawQueue()
	small := func(size int) *rawPacket { return &rawPacket{size: size} }
	for i := 0; i < sessionQueuePackets; i++ {
		if !q.push(small(100)) {
			t.Fatalf("push %d refused below the packet limit", i)
		}
	}
	if q.push(small(100)) {
		t.Fatal("push over the packet limit accepted")
	}
	got := q.popInto(nil, 64)
	if len(got) != 64 || q.bytes != (sessionQueuePackets-64)*100 {
		t.Fatalf("popped %d, %d bytes left", len(got), q.bytes)
	}
	q.popInto(nil, sessionQueuePackets)
	// The byte limit: 16 super-packets of 64 KiB fill 1 MiB.
	for i := 0; i < 16; i++ {
		if !q.push(small(65536)) {
			t.Fatalf("super-packet %d refused under the byte limit", i)
		}
	}
	if q.push(small(65536)) || !q.push(small(0)) {
		t.Fatal("byte limit not enforced as expected")
	}
	if len(q.popInto(nil, 100)) != 17 || q.bytes != 0 {
		t.Fatal("queue not drained")
	}
}

func TestRawQueueSparseFirst(t *testing.T) {
	q := newRawQueue()
	bulk, ping := &rawPacket{size: 60000}, &rawPacket{size: 84}
	q.push(bulk)
	q.push(ping)
	got := q.popInto(nil, 10)
	if len(got) != 2 || got[0] != ping || got[1] != bulk || q.bytes != 0 {
		t.Fatalf("order %v, %d bytes left", got, q.bytes)
	}
	// max applies across both lanes.
	q.push(bulk)
	q.push(ping)
	if got := q.popInto(nil, 1); len(got) != 1 || got[0] != ping {
		t.Fatalf("max 1: %v", got)
	}
	if got := q.popInto(nil, 1); len(got) != 1 || got[0] != bulk {
		t.Fatalf("then: %v", got)
	}
}
