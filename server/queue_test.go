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

// The queue itself is tested in tunnel (Lanes); this checks the gateway's
// bounds for a session in raw mode.
func TestRawQueueBounds(t *testing.T) {
	q := newRawQueue()
	for i := 0; i < sessionQueuePackets; i++ {
		if !q.Push(&tunnel.VnetPacket{Size: 100}, 100) {
			t.Fatalf("push %d refused below the packet limit", i)
		}
	}
	if q.Push(&tunnel.VnetPacket{Size: 100}, 100) {
		t.Fatal("push over the packet limit accepted")
	}
	q.Take(nil, sessionQueuePackets, 0)
	for i := 0; i < rawQueueBytes/65536; i++ {
		if !q.Push(&tunnel.VnetPacket{Size: 65536}, 65536) {
			t.Fatalf("super-packet %d refused under the byte limit", i)
		}
	}
	if q.Push(&tunnel.VnetPacket{Size: 65536}, 65536) {
		t.Fatal("byte limit not enforced")
	}
	ping := &tunnel.VnetPacket{Size: 84}
	if !q.Push(ping, 84) || q.Take(nil, 1, 0)[0] != ping {
		t.Fatal("a ping does not overtake queued super-packets")
	}
}
