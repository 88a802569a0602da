package server

import (
	"testing"
	"time"
)

// TestMemReturn: freed memory goes back to the OS once a drop to half the
// peak (or a full turnover of the fleet) is over, never while sessions
// are only being added, never during a mass disconnect still under way,
// not for a handful of sessions, and at most once per memReturnEvery.
func TestMemReturn(t *testing.T) {
	type step struct {
		after    time.Duration // since the previous step
		live     int
		accepted uint64
		want     bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"ramp up never returns", []step{
			{time.Minute, 500, 500, false}, {time.Minute, 1000, 1000, false}, {time.Minute, 2000, 2000, false}}},
		{"drop to half returns once it is over", []step{
			{time.Minute, 1000, 1000, false},
			{time.Minute, 600, 1000, false}, // still falling fast
			{time.Second / 4, 400, 1000, false},
			{time.Second / 4, 400, 1000, true},                                   // steady: give back
			{time.Second / 4, 400, 1000, false}, {time.Minute, 400, 1000, false}, // peak reset: nothing more to give
		}},
		{"all closed", []step{
			{time.Minute, 2000, 2000, false}, {time.Second, 0, 2000, false}, {time.Second / 4, 0, 2000, true}}},
		{"drop not deep enough", []step{
			{time.Minute, 1000, 1000, false}, {time.Minute, 700, 1000, false}, {time.Minute, 700, 1000, false}}},
		{"small gateway", []step{
			{time.Minute, 200, 200, false}, {time.Minute, 0, 200, false}, {time.Minute, 0, 200, false},
			{time.Minute, 200, 300, false}, {time.Minute, 200, 450, false}}}, // 250 closed in all
		{"a full turnover at a steady count", []step{
			{time.Minute, 1000, 1000, false},
			{time.Minute, 1000, 1500, false}, // half the fleet reconnected
			{time.Minute, 1000, 2000, true},  // all of it
			{time.Minute, 1000, 2500, false},
		}},
		{"rate limited", []step{
			{time.Minute, 1000, 1000, false}, {time.Second, 0, 1000, false}, {time.Second / 4, 0, 1000, true},
			{memReturnEvery / 4, 1000, 2000, false}, {memReturnEvery / 4, 0, 2000, false}, {memReturnEvery / 4, 0, 2000, false}, // within memReturnEvery
			{memReturnEvery, 0, 2000, true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			m := memReturn{free: func() { calls++ }}
			now := time.Unix(1e9, 0)
			for i, st := range tt.steps {
				now = now.Add(st.after)
				before := calls
				if got := m.tick(now, st.live, st.accepted); got != st.want || calls-before != map[bool]int{false: 0, true: 1}[st.want] {
					t.Fatalf("step %d (%d live, %d accepted): returned %v (%d calls), want %v", i, st.live, st.accepted, got, calls-before, st.want)
				}
			}
		})
	}
}
