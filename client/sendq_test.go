package client

import (
	"testing"

	"github.com/sallyport/sallyport/tunnel"
)

// The queue itself is tested in tunnel (Lanes); this checks the laptop's
// bounds: a ping overtakes queued bulk, bulk stops at tunnel.QueueBytes while
// small packets still get in, and a round carries at most sendRound bytes.
func TestSendQueueBounds(t *testing.T) {
	q := tunnel.NewQueue()
	pk := func(size int) *tunnel.VnetPacket { return &tunnel.VnetPacket{Size: size} }
	b1, ping := pk(60000), pk(84)
	q.Push(b1, b1.Size)
	q.Push(ping, ping.Size)
	if got := q.Take(nil, tunnel.MaxRound, sendRound); len(got) != 2 || got[0] != ping || got[1] != b1 {
		t.Fatalf("round order wrong: %v", got)
	}
	n := 0
	for q.Push(pk(60000), 60000) {
		n++
	}
	if n != tunnel.QueueBytes/60000 {
		t.Fatalf("bulk lane took %d packets of 60000 bytes", n)
	}
	if !q.Push(pk(100), 100) {
		t.Fatal("sparse packet refused while bulk is full")
	}
	round := q.Take(nil, tunnel.MaxRound, sendRound)
	bulk := 0
	for _, p := range round[1:] {
		bulk += p.Size
	}
	if round[0].Size != 100 || bulk > sendRound {
		t.Fatalf("round: first %d bytes, %d bulk bytes", round[0].Size, bulk)
	}
	tunnel.DrainQueue(q)
	if q.Len() != 0 {
		t.Fatal("drain left packets")
	}
}
