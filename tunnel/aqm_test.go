package tunnel

import (
	"testing"
	"time"
)

func TestAQM(t *testing.T) {
	a := &AQM{Target: 100, Interval: 10 * time.Millisecond}
	t0 := time.Unix(0, 0)
	at := func(ms float64) time.Time { return t0.Add(time.Duration(ms * float64(time.Millisecond))) }
	steps := []struct {
		ms      float64
		backlog int
		drop    bool
	}{
		{0, 50, false},    // below target
		{1, 200, false},   // above: clock starts
		{5, 200, false},   // not yet a whole interval
		{11, 200, true},   // stood for 10 ms: first drop
		{12, 200, false},  // next drop 10 ms later (count 1)
		{21, 200, true},   // second drop, count 2
		{26, 200, false},  // next at 21 + 10/sqrt(2) = 28.07
		{28.2, 200, true}, // third drop
		{29, 50, false},   // queue drained: stop
		{30, 200, false},  // above again: clock restarts
		{35, 200, false},
		{40.5, 200, true}, // stood 10 ms again
	}
	for _, s := range steps {
		if got := a.Drop(at(s.ms), s.backlog); got != s.drop {
			t.Fatalf("at %.1f ms backlog %d: drop=%v, want %v", s.ms, s.backlog, got, s.drop)
		}
	}
}

func TestBulkVictim(t *testing.T) {
	mk := func(ver, proto byte, size int) []byte {
		b := make([]byte, Headroom+size)
		p := b[Headroom:]
		p[0] = ver << 4
		if ver == 4 {
			p[9] = proto
		} else {
			p[6] = proto
		}
		return b
	}
	tests := []struct {
		name string
		pkts [][]byte
		want int
	}{
		{"acks and pings only", [][]byte{mk(4, 6, 52), mk(4, 1, 1400), mk(4, 6, 40)}, -1},
		{"largest tcp", [][]byte{mk(4, 6, 52), mk(4, 6, 1400), mk(4, 6, 900)}, 1},
		{"udp bulk v6", [][]byte{mk(6, 17, 1200), mk(6, 58, 1400)}, 0},
		{"empty", nil, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sizes := make([]int, len(tt.pkts))
			for i, p := range tt.pkts {
				sizes[i] = len(p) - Headroom
			}
			if got := BulkVictim(tt.pkts, sizes, len(tt.pkts), Headroom); got != tt.want {
				t.Fatalf("got %d, want %d", got, tt.want)
			}
		})
	}
}
