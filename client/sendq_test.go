package client

import "testing"

func TestSendQueueLanes(t *testing.T) {
	q := newSendQueue()
	pk := func(size int) *sendPkt { return &sendPkt{size: size} }
	// Bulk queued first, then a ping: the ping goes out first.
	b1, b2, ping := pk(60000), pk(60000), pk(84)
	for _, p := range []*sendPkt{b1, b2, ping} {
		if !q.push(p) {
			t.Fatal("push refused")
		}
	}
	got := q.take(nil)
	if len(got) != 3 || got[0] != ping || got[1] != b1 || got[2] != b2 {
		t.Fatalf("round order wrong: %v", got)
	}
	// The bulk lane is bounded in bytes; sparse packets still get in.
	n := 0
	for q.push(pk(60000)) {
		n++
	}
	if n != bulkQueueBytes/60000 {
		t.Fatalf("bulk lane took %d packets of 60000 bytes", n)
	}
	if !q.push(pk(100)) {
		t.Fatal("sparse packet refused while bulk is full")
	}
	// A round carries at most sendRound bulk bytes (but always one packet).
	round := q.take(nil)
	bulk := 0
	for _, p := range round[1:] {
		bulk += p.size
	}
	if round[0].size != 100 || bulk > sendRound {
		t.Fatalf("round: first %d bytes, %d bulk bytes", round[0].size, bulk)
	}
	q.drain()
	if len(q.take(nil)) != 0 || q.bulkBytes != 0 {
		t.Fatal("drain left packets")
	}
}
