package server

// Admission limits: how many TLS handshakes may be in flight
// (tls.max_handshakes) and how many sessions may be live
// (tunnel.max_sessions). Both protect the gateway's memory and CPU from a
// flood or from a fleet larger than it was sized for; both are counted by
// reason in the refusal counters (metrics, `server status`) and logged
// through the rate-limited refusal log.

import (
	"fmt"
	"net"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/tunnel"
)

// Defaults of the limits (config.go applies them).
const (
	DefaultMaxSessions = 10000
	// DefaultMaxHandshakesPerCPU times the machine's CPUs is the default
	// tls.max_handshakes: far more than a CPU can verify within the
	// handshake timeout, so only a flood meets it.
	DefaultMaxHandshakesPerCPU = 256
)

// admitHandshake counts a new TCP connection as a handshake in flight, or,
// when tls.max_handshakes are in flight already, closes it before any TLS
// (a flood then costs an accept and a close, not a signature each) and
// reports false. It runs in the accept loop, so a burst of connections is
// counted before their goroutines start.
func (s *Server) admitHandshake(c net.Conn) bool {
	limit := s.config().TLS.MaxHandshakes
	s.sessMu.Lock()
	ok := limit <= 0 || s.shaking < limit
	if ok {
		s.shaking++
		s.rescaleLocked()
	}
	s.sessMu.Unlock()
	if !ok {
		s.logRefusal(c.RemoteAddr().String(), &refusal{tunnel.ReasonOverload, "-",
			fmt.Errorf("%d handshakes in flight (tls.max_handshakes): connection closed before TLS", limit)}, pki.Identity{})
		_ = c.Close()
	}
	return ok
}

// sessionSlot is sessionSlotLocked for a check before the address and
// config (register checks again, under the same lock as the insert).
func (s *Server) sessionSlot(ss *session) error {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	return s.sessionSlotLocked(ss)
}

// sessionSlotLocked refuses a new session when tunnel.max_sessions are
// live, unless it replaces the device's own session (a reconnect never
// raises the count). Hold sessMu.
func (s *Server) sessionSlotLocked(ss *session) error {
	limit := s.config().Tunnel.MaxSessions
	if limit <= 0 || len(s.byKey) < limit || s.byKey[ss.key] != nil {
		return nil
	}
	return &refusal{tunnel.ReasonCapacity, ss.id.Device, fmt.Errorf("%d sessions live (tunnel.max_sessions)", len(s.byKey))}
}
