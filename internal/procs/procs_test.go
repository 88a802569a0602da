package procs

import "testing"

// fake stands in for runtime.GOMAXPROCS: cur is the value in force,
// calls counts the changes.
type fake struct {
	cur, calls int
}

func (f *fake) set(n int) int {
	old := f.cur
	if n > 0 {
		f.cur = n
		f.calls++
	}
	return old
}

func TestScaler(t *testing.T) {
	tests := []struct {
		name       string
		configured int
		env        bool
		sessions   []int
		want       []int
	}{
		{"auto follows sessions up to the CPUs", 0, false, []int{0, 1, 2, 3, 9, 2, 0}, []int{1, 1, 2, 3, 4, 2, 1}},
		{"fixed ignores sessions", 3, false, []int{0, 5, 1}, []int{3, 3, 3}},
		{"fixed may exceed the CPUs", 8, false, []int{1}, []int{8}},
		{"environment wins", 2, true, []int{0, 1, 7}, []int{4, 4, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fake{cur: 4}
			s := newScaler(tt.configured, tt.env, f.set)
			for i, n := range tt.sessions {
				if got := s.Sessions(n); got != tt.want[i] || f.cur != tt.want[i] {
					t.Fatalf("Sessions(%d) = %d, GOMAXPROCS %d, want %d", n, got, f.cur, tt.want[i])
				}
			}
		})
	}
}

func TestScalerSetsOnlyOnChange(t *testing.T) {
	f := &fake{cur: 4}
	s := newScaler(0, false, f.set)
	for range 5 {
		s.Sessions(1)
	}
	if f.calls != 1 {
		t.Fatalf("GOMAXPROCS set %d times for an unchanged value, want 1", f.calls)
	}
	if s.Mode() != ModeAuto {
		t.Fatalf("mode %q, want %q", s.Mode(), ModeAuto)
	}
}

func TestCheck(t *testing.T) {
	for _, tt := range []struct {
		n  int
		ok bool
	}{{0, true}, {1, true}, {Max, true}, {-1, false}, {Max + 1, false}} {
		if err := Check(tt.n); (err == nil) != tt.ok {
			t.Errorf("Check(%d) = %v, want ok %v", tt.n, err, tt.ok)
		}
	}
}

func TestNilScaler(t *testing.T) {
	var s *Scaler
	if s.Sessions(3) < 1 {
		t.Fatal("nil Scaler reported no Ps")
	}
}
