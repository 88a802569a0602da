package server

// Live push (tunnel/push.go): a reload that changes what a live session is
// pushed (routes, DNS, search domains, MTU) sends the device its new
// config in a FramePush, if the device negotiated tunnel.CapPush. A device
// without it keeps the old routes and DNS until it reconnects (the policy
// itself is enforced at once either way).

import (
	"fmt"
	"slices"
	"sync"

	"github.com/sallyport/sallyport/tunnel"
)

// pushState is what a session's device was last sent.
type pushState struct {
	mu   sync.Mutex
	caps []string      // negotiated in the config answer
	last tunnel.Config // the config the device has now
}

// sent records the config the device was given.
func (p *pushState) sent(caps []string, c tunnel.Config) {
	p.mu.Lock()
	p.caps, p.last = caps, c
	p.mu.Unlock()
}

// pushedEqual reports whether a and b push the same routes, DNS and MTU.
func pushedEqual(a, b tunnel.Config) bool {
	return slices.Equal(a.Routes, b.Routes) && slices.Equal(a.DNS, b.DNS) &&
		slices.Equal(a.SearchDomains, b.SearchDomains) && a.MTU == b.MTU
}

// repush sends the device its config again if it changed since it was last
// sent and the device takes pushes. A failed write ends the session.
func (ss *session) repush() {
	p := &ss.push
	p.mu.Lock()
	defer p.mu.Unlock()
	c := ss.config(p.caps)
	if pushedEqual(c, p.last) {
		return
	}
	if ss.link != nil && !slices.Equal(c.Routes, p.last.Routes) {
		// Any CONNECT-IP client takes new routes (ROUTE_ADVERTISEMENT).
		if err := ss.advertise(c); err != nil {
			ss.close(tunnel.ReasonError, fmt.Errorf("advertise new routes: %w", err))
			return
		}
		if !tunnel.HasCap(p.caps, tunnel.CapPush) {
			p.last.Routes = c.Routes
		}
	}
	if !tunnel.HasCap(p.caps, tunnel.CapPush) {
		return
	}
	b, err := tunnel.EncodeConfig(c)
	if err == nil {
		err = ss.w.WriteControl(tunnel.FramePush, b)
	}
	if err != nil {
		ss.close(tunnel.ReasonError, fmt.Errorf("push new config: %w", err))
		return
	}
	p.last = c
	ss.logger().Info("new config pushed to the live session", "routes", fmt.Sprint(c.Routes), "dns", fmt.Sprint(c.DNS),
		"search_domains", fmt.Sprint(c.SearchDomains), "mtu", c.MTU, "policies", ss.grant.Load().Names)
}

// repushLater runs repush on its own goroutine (owned by s.wg): a reload
// does not wait behind one device's slow stream.
func (s *Server) repushLater(ss *session) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ss.repush()
	}()
}
