package tunnel

import "testing"

func TestLanes(t *testing.T) {
	q := NewLanes[string](6, 3000, 100)
	for _, p := range []struct {
		v    string
		size int
	}{{"bulk1", 1500}, {"bulk2", 1500}, {"ping", 84}, {"ack", 52}} {
		if !q.Push(p.v, p.size) {
			t.Fatalf("push %s refused", p.v)
		}
	}
	select {
	case <-q.Ready():
	default:
		t.Fatal("no ready signal")
	}
	if q.Push("bulk3", 1500) {
		t.Fatal("bulk over the byte bound accepted")
	}
	if !q.Push("dns", 90) {
		t.Fatal("sparse refused while only bulk bytes are full")
	}
	// Sparse first; the round's byte budget stops bulk after one packet.
	got := q.Take(nil, 10, 2000)
	want := []string{"ping", "ack", "dns", "bulk1"}
	if len(got) != len(want) {
		t.Fatalf("take %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("take %v, want %v", got, want)
		}
	}
	if got := q.Take(nil, 10, 0); len(got) != 1 || got[0] != "bulk2" || q.Len() != 0 {
		t.Fatalf("second take %v, len %d", got, q.Len())
	}
	// The packet bound counts both lanes.
	for i := 0; i < 6; i++ {
		q.Push("s", 1)
	}
	if q.Push("s", 1) {
		t.Fatal("push over the packet bound accepted")
	}
	if got := q.Take(nil, 4, 0); len(got) != 4 || q.Len() != 2 {
		t.Fatalf("max not honoured: %d taken, %d left", len(got), q.Len())
	}
}
