package server

// Giving freed memory back to the OS. Go keeps the heap it has grown into
// and returns it only slowly, and only after a garbage collection that an
// idle gateway may not run for minutes: after a fleet's sessions close (a
// mass disconnect, a drain, the night) or after the fleet has reconnected
// once over (every session's state allocated afresh), the gateway would
// stay at its peak resident size. routineWatch asks memReturn on every
// tick; when the live sessions fell to half their recent peak or fewer, or
// as many sessions as that peak closed (and were replaced) since the last
// return, and no mass disconnect is still under way, it runs
// debug.FreeOSMemory (a full collection, then every free page back to the
// kernel), at most once per memReturnEvery.

import (
	"runtime/debug"
	"time"
)

const (
	// memReturnEvery bounds how often memory is given back. The cost is
	// paid by the sessions that closed: one forced collection (tens of
	// milliseconds of CPU for a heap of 10,000 sessions, about 1 ms for a
	// few) per half the peak or per the peak's worth of closed sessions,
	// at least memReturnMinSessions, so a few microseconds a session.
	memReturnEvery = 2 * time.Second
	// memReturnMinSessions is the smallest drop (or turnover) worth it:
	// below it the memory at stake is a few MiB, and the gateway's own
	// collections and scavenger do well enough.
	memReturnMinSessions = 256
)

// memReturn decides when to give memory back; only routineWatch uses it.
type memReturn struct {
	peak     int       // most live sessions since the last return
	prev     int       // live sessions at the previous tick
	accepted uint64    // sessions accepted (ever) at the last return
	live     int       // live sessions at the last return
	last     time.Time // the last return
	free     func()    // debug.FreeOSMemory; tests count calls instead
}

// tick is called with the live session count and the number of sessions
// ever accepted; it returns memory to the OS when due and reports whether
// it did.
func (m *memReturn) tick(now time.Time, live int, accepted uint64) bool {
	m.peak = max(m.peak, live)
	dropping := m.prev-live > max(m.peak/8, 1) // a mass disconnect still under way: wait for its end
	m.prev = live
	if dropping || now.Sub(m.last) < memReturnEvery || accepted < m.accepted {
		return false
	}
	fell := m.peak-live >= memReturnMinSessions && live <= m.peak/2
	// Sessions that closed since the last return: accepted ones less the
	// growth of the live count.
	closed := int(accepted-m.accepted) - (live - m.live)
	turned := closed >= max(m.peak, memReturnMinSessions)
	if !fell && !turned {
		return false
	}
	free := m.free
	if free == nil {
		free = debug.FreeOSMemory
	}
	free()
	m.peak, m.accepted, m.live, m.last = live, accepted, live, now
	return true
}

// returnMemory is memReturn's tick for the server's current counts.
func (s *Server) returnMemory(now time.Time) {
	s.sessMu.Lock()
	live := len(s.byKey)
	s.sessMu.Unlock()
	s.meters.mu.Lock()
	accepted := s.meters.accepted
	s.meters.mu.Unlock()
	peak := s.memReturn.peak
	if s.memReturn.tick(now, live, accepted) {
		s.log.Debug("freed memory returned to the OS", "sessions", live, "peak_sessions", max(peak, live))
	}
}
