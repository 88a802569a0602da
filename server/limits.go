package server

// Admission limits: how many TLS handshakes may be in flight
// (tls.max_handshakes, tls.max_handshakes_per_source, with the
// pre-authentication deadlines of preauth.go) and how many sessions may be
// live (tunnel.max_sessions). Both protect the gateway's memory and CPU
// from a flood or from a fleet larger than it was sized for; both are
// counted by reason in the refusal counters (metrics, `server status`) and
// logged through the rate-limited refusal log.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

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

// admitHandshake gives a new TCP connection a handshake slot (preauth.go
// shakeTable), closing the oldest connection still waiting for its
// ClientHello when the slots (or the source's) are full; the evicted
// connection's goroutine counts it. When nothing can be evicted it closes
// the newcomer before any TLS (a flood then costs an accept and a close,
// not a signature each) and returns nil. It runs in the accept loop, so a
// burst of connections is counted before their goroutines start.
func (s *Server) admitHandshake(c net.Conn) *shakeSlot {
	tc := s.config().TLS
	slot, victim, refused := s.shakes.admit(sourceOf(c.RemoteAddr()), c, tc.MaxHandshakes, tc.MaxHandshakesPerSource)
	if victim != nil {
		_ = victim.conn.Close()
	}
	if slot == nil {
		err := fmt.Errorf("%d handshakes in flight (tls.max_handshakes), all past their ClientHello: connection closed before TLS", tc.MaxHandshakes)
		if refused == tunnel.ReasonPerSource {
			err = fmt.Errorf("%d handshakes in flight from %s (tls.max_handshakes_per_source), all past their ClientHello: connection closed before TLS",
				tc.MaxHandshakesPerSource, sourceOf(c.RemoteAddr()))
		}
		s.logRefusal(c.RemoteAddr().String(), &refusal{refused, "-", err}, pki.Identity{})
		_ = c.Close()
		return nil
	}
	s.shakingDelta(1)
	return slot
}

// handshakeFailure is the refusal a failed TLS handshake is counted
// under: evicted, a pre-authentication timeout by stage, or what the TLS
// error says.
func (s *Server) handshakeFailure(err error, sc *shakeConn) *refusal {
	tc := s.config().TLS
	var evicted, pastHello bool
	if sc.slot != nil {
		evicted, pastHello = s.shakes.wasEvicted(sc.slot)
	}
	switch {
	case pastHello:
		return &refusal{tunnel.ReasonEvicted, "-", errors.New("closed after its ClientHello, before it proved a certificate, to share the handshake slots out (all tls.max_handshakes busy, more of them from its network than from the newcomer's)")}
	case evicted:
		return &refusal{tunnel.ReasonEvicted, "-", errors.New("closed before its ClientHello to make room for a new connection (all tls.max_handshakes busy)")}
	case errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded):
		switch r := timeoutReason(sc.stage); r {
		case tunnel.ReasonFirstByteTimeout:
			return &refusal{r, "-", fmt.Errorf("nothing received within tls.first_byte_timeout (%v)", tc.FirstByteTimeout)}
		case tunnel.ReasonHelloTimeout:
			return &refusal{r, "-", fmt.Errorf("TLS ClientHello not complete within tls.hello_timeout (%v)", tc.HelloTimeout)}
		}
	}
	return classify(err)
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
