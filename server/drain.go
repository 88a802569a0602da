package server

// Drain (docs/admin-guide.md, "Drain"): SIGTERM or `sallyport server drain` stops
// accepting, closes every session with reason "drain" (a laptop with
// several gateways in `servers` moves to the next one at once), waits up to
// drain_timeout for the sessions to end, then lets Run return.

import (
	"sync"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// drainer is the request to drain, from the admin socket.
type drainer struct {
	once, req sync.Once
	ch        chan struct{}
}

// c is closed when a drain was requested.
func (d *drainer) c() chan struct{} {
	d.once.Do(func() { d.ch = make(chan struct{}) })
	return d.ch
}

// request asks Run to drain and exit; later calls do nothing.
func (d *drainer) request() {
	ch := d.c()
	d.req.Do(func() { close(ch) })
}

// liveSessions counts sessions whose goroutines have not ended.
func (s *Server) liveSessions() int {
	s.meters.mu.Lock()
	defer s.meters.mu.Unlock()
	return len(s.meters.tracked)
}

// drainPoll is how often drain looks whether the sessions have ended.
const drainPoll = 20 * time.Millisecond

// drain stops new sessions and closes the live ones with reason "drain",
// waiting up to drain_timeout for them to end; it returns how many were
// still running then (Run's shutdown closes those).
func (s *Server) drain(trigger string) int {
	s.draining.Store(true)
	timeout := s.config().DrainTimeout
	s.log.Info("gateway draining: no new sessions; every device is told to move to another gateway", "trigger", trigger,
		"sessions", len(s.sessions()), "drain_timeout", timeout.String())
	if s.ln != nil {
		s.ln.Close()
	}
	if s.quic != nil {
		_ = s.quic.ln.Close() // no new QUIC connections; the sessions are closed below
	}
	start := time.Now()
	for {
		// Again each round: a handshake that was past its draining check
		// may register a session late.
		s.closeAll(tunnel.ReasonDrain)
		n := s.liveSessions()
		if n == 0 {
			s.log.Info("gateway drained", "took", time.Since(start).Round(time.Millisecond).String())
			return 0
		}
		if time.Since(start) >= timeout {
			s.log.Warn("drain_timeout reached; ending the sessions left", "sessions", n)
			return n
		}
		time.Sleep(drainPoll)
	}
}
