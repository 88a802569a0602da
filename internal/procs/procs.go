// Package procs sizes the Go scheduler (GOMAXPROCS) to the data plane.
//
// One tunnel session is a pipeline: a goroutine reads the TUN and hands
// packets to a goroutine that encrypts and writes the stream, and the
// stream reader writes the TUN. With more Ps than the work can use, every
// hand-off makes the runtime wake another OS thread to look for work; the
// woken thread usually finds nothing and sleeps again, and each wake-up is a
// context switch (and, across CPUs, an inter-processor interrupt). Measured
// on a 2-CPU machine with the laptop, gateway and iperf3 ends sharing it,
// one P per process cut sallyport's CPU per GB by about 12% and raised
// single-stream throughput by about 8% (make bench; see
// docs/performance.md).
//
// So in automatic mode the laptop runs on one P, and the gateway runs on
// one P per live session or handshake in flight, up to the CPUs Go found at
// start. A positive configured value pins GOMAXPROCS; the GOMAXPROCS
// environment variable, if set, wins over both.
package procs

import (
	"fmt"
	"os"
	"runtime"
	"sync"
)

// Max bounds a configured value.
const Max = 1024

// Check validates a configured value (0 = automatic, else 1..Max).
func Check(configured int) error {
	if configured < 0 || configured > Max {
		return fmt.Errorf("%d is outside 0..%d (0 = automatic)", configured, Max)
	}
	return nil
}

// Scaler sets GOMAXPROCS from the number of live sessions. It is safe for
// concurrent use; a nil *Scaler does nothing.
type Scaler struct {
	mu    sync.Mutex
	mode  string
	fixed int // >0: pinned
	max   int
	cur   int
	set   func(int) int
}

// Mode names how a Scaler decides.
const (
	ModeAuto  = "auto"  // follow live sessions, 1..CPUs
	ModeFixed = "fixed" // configured value
	ModeEnv   = "env"   // GOMAXPROCS environment variable; never changed
)

// New returns a Scaler for a configured value (0 = automatic) and applies
// it for no sessions (one P in automatic mode).
func New(configured int) *Scaler {
	return newScaler(configured, os.Getenv("GOMAXPROCS") != "", runtime.GOMAXPROCS)
}

// NewFunc is New with set in place of runtime.GOMAXPROCS and the
// environment ignored, for tests of the code that drives a Scaler.
func NewFunc(configured int, set func(int) int) *Scaler {
	return newScaler(configured, false, set)
}

func newScaler(configured int, env bool, set func(int) int) *Scaler {
	s := &Scaler{set: set, max: set(0)}
	switch {
	case env:
		s.mode = ModeEnv
	case configured > 0:
		s.mode, s.fixed = ModeFixed, configured
	default:
		s.mode = ModeAuto
	}
	s.Sessions(0)
	return s
}

// Sessions tells the Scaler how many sessions are live (the gateway also
// counts handshakes in flight) and returns the GOMAXPROCS now in force.
func (s *Scaler) Sessions(n int) int {
	if s == nil {
		return runtime.GOMAXPROCS(0)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var want int
	switch s.mode {
	case ModeEnv:
		return s.set(0)
	case ModeFixed:
		want = s.fixed
	default:
		want = min(max(n, 1), s.max)
	}
	if want != s.cur {
		s.set(want) // stops the world briefly; only when the value changes
		s.cur = want
	}
	return s.cur
}

// Current returns the GOMAXPROCS in force.
func (s *Scaler) Current() int {
	if s == nil {
		return runtime.GOMAXPROCS(0)
	}
	return s.set(0)
}

// Mode reports ModeAuto, ModeFixed or ModeEnv ("" for a nil Scaler).
func (s *Scaler) Mode() string {
	if s == nil {
		return ""
	}
	return s.mode
}
