package tunnel

import (
	"errors"
	"io"
	"log/slog"
	"testing"
)

// TestReadTUN: every packet goes where Route says, in order; Route's nil
// drops it; a full queue counts the reason the caller gave; empty reads
// are skipped, a read error is retried, a closed device ends the loop.
func TestReadTUN(t *testing.T) {
	small, big := pktOf(100, 1), pktOf(5000, 2)
	var steps []scriptStep
	steps = append(steps, scriptStep{pkts: [][]byte{small}}, scriptStep{err: errors.New("driver hiccup")}, scriptStep{pkts: [][]byte{big}})
	steps = append(steps, scriptStep{pkts: [][]byte{pktOf(50, 9)}}) // routed nowhere
	for range QueuePackets + 3 {
		steps = append(steps, scriptStep{pkts: [][]byte{pktOf(60, 3)}})
	}
	dev := &scriptDev{batch: 1, steps: steps}
	q := NewQueue()
	var drops DropCounts
	route := func(pkt []byte) (*Queue, *DropCounts) {
		if pkt[0] == 9 {
			return nil, nil
		}
		return q, &drops
	}
	ReadTUN(NewPacketSource(dev), slog.New(slog.NewTextHandler(io.Discard, nil)), func() bool { return false }, route, DropQueueFull)
	got := q.Take(nil, QueuePackets, 0)
	if len(got) != QueuePackets {
		t.Fatalf("queued %d, want %d", len(got), QueuePackets)
	}
	// Sparse lane first: the small packets, in the order read; then bulk.
	if got[0].Size != 100 || got[0].Buf[Headroom] != 1 || got[len(got)-1].Size != 5000 || got[len(got)-1].Buf[Headroom] != 2 {
		t.Fatalf("first %d bytes, last %d bytes", got[0].Size, got[len(got)-1].Size)
	}
	if cap(got[0].Buf) != Headroom+SmallPacket || cap(got[len(got)-1].Buf) != Headroom+MaxPacket {
		t.Fatalf("small packet in a %d-byte buffer, big one in %d", cap(got[0].Buf), cap(got[len(got)-1].Buf))
	}
	if n := drops.Load(DropQueueFull); n != 5 { // 2 + QueuePackets+3 pushed, QueuePackets fit
		t.Fatalf("queue_full %d, want 5", n)
	}
	for _, p := range got {
		TUNPackets.Put(p)
	}
}
