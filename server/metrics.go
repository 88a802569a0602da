package server

// Prometheus metrics (docs/monitoring.md). Nothing here is on the data
// plane: the counters sessions already keep are read at scrape time.
// Gateway totals must never go backwards, so a session's counters stay in
// the tracked set until its goroutines have ended (run returned) and are
// then folded into retired in the same step.

import (
	"maps"
	"sync"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/server/metrics"
	"github.com/sallyport/sallyport/tunnel"
)

// meters is the gateway's metrics state.
type meters struct {
	mu             sync.Mutex
	tracked        map[*session]struct{} // sessions whose goroutines may still count
	retired        metrics.Traffic       // counters of sessions that have ended
	accepted       uint64
	closed         map[string]uint64
	reloadFailures uint64
	renewOK        uint64
	renewTime      time.Duration
	renewNo        map[string]uint64 // refused renewals by reason
}

// renewed counts one renewal issued in d.
func (m *meters) renewed(d time.Duration) {
	m.mu.Lock()
	m.renewOK++
	m.renewTime += d
	m.mu.Unlock()
}

// renewRefused counts one refused renewal.
func (m *meters) renewRefused(r tunnel.Reason) {
	m.mu.Lock()
	if m.renewNo == nil {
		m.renewNo = map[string]uint64{}
	}
	m.renewNo[string(r)]++
	m.mu.Unlock()
}

// renewals is how many renewals were issued and refused.
func (m *meters) renewals() (issued, refused uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range m.renewNo {
		refused += n
	}
	return m.renewOK, refused
}

// track counts a handshake that became a session and follows its counters
// until retire.
func (s *Server) track(ss *session) {
	m := &s.meters
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.tracked == nil {
		m.tracked = map[*session]struct{}{}
	}
	m.tracked[ss] = struct{}{}
	m.accepted++
}

// retire folds the counters of a session whose goroutines have all ended
// into the totals and counts its close reason.
func (s *Server) retire(ss *session) {
	m := &s.meters
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.tracked, ss)
	addTraffic(&m.retired, ss.traffic())
	reason := tunnel.Reason("unknown")
	if r := ss.reason.Load(); r != nil {
		reason = *r
	}
	if m.closed == nil {
		m.closed = map[string]uint64{}
	}
	m.closed[string(reason)]++
}

func (s *Server) reloadFailed() {
	s.meters.mu.Lock()
	s.meters.reloadFailures++
	s.meters.mu.Unlock()
}

// traffic is the session's counters now.
func (ss *session) traffic() metrics.Traffic {
	return metrics.Traffic{
		BytesIn: ss.bytesIn.Load(), BytesOut: ss.bytesOut.Load(),
		PacketsIn: ss.packetsIn.Load(), PacketsOut: ss.packetsOut.Load(),
		Drops: ss.drops.Map(tunnel.GatewayDrops),
	}
}

func addTraffic(dst *metrics.Traffic, t metrics.Traffic) {
	dst.BytesIn += t.BytesIn
	dst.BytesOut += t.BytesOut
	dst.PacketsIn += t.PacketsIn
	dst.PacketsOut += t.PacketsOut
	if dst.Drops == nil {
		dst.Drops = map[string]uint64{}
	}
	for r, n := range t.Drops {
		dst.Drops[r] += n
	}
}

// MetricsSnapshot implements metrics.Source.
func (s *Server) MetricsSnapshot() metrics.Snapshot {
	now := time.Now()
	inForce := s.snap.Load() // config and trust of one moment
	cfg, t := inForce.cfg, inForce.trust
	snap := metrics.Snapshot{Now: now, PerDevice: cfg.Metrics.PerDevice, LastReloadSuccess: t.loadedAt, Refused: s.refusals.counts()}

	m := &s.meters
	m.mu.Lock()
	var total metrics.Traffic
	addTraffic(&total, m.retired)
	for ss := range m.tracked {
		addTraffic(&total, ss.traffic())
	}
	snap.Accepted, snap.Closed, snap.ReloadFailures = m.accepted, maps.Clone(m.closed), m.reloadFailures
	snap.Renewed, snap.RenewRefused, snap.RenewSeconds = m.renewOK, maps.Clone(m.renewNo), m.renewTime.Seconds()
	m.mu.Unlock()
	if t.renew != nil {
		snap.Renewal, snap.IssuerNotAfter = true, t.renew.issuer.Cert().NotAfter
	}
	for _, r := range tunnel.GatewayDrops {
		total.Drops[r.String()] += 0 // every reason present from the first scrape
	}
	total.Drops["no_session"] = s.noRoute.Load()
	snap.Total = total

	s.sessMu.Lock()
	snap.HandshakesActive = s.shaking
	_, snap.HandshakesWaitingHello, snap.HandshakesPastHello, _ = s.shakes.counts()
	snap.DuplicateDevices = len(s.dups.list(now))
	s.sessMu.Unlock()
	snap.SessionsPerCA = map[string]int{}
	for _, ss := range s.sessions() {
		snap.Devices = append(snap.Devices, metrics.Device{Name: ss.id.Device, CertNotAfter: ss.expiry(), Traffic: ss.traffic()})
		snap.SessionsPerCA[ss.anchor()]++
	}
	snap.Sessions = len(snap.Devices)
	for _, c := range t.crl.CRLs() {
		n := -1.0
		if c.Number != nil {
			n, _ = c.Number.Float64()
		}
		snap.CRLs = append(snap.CRLs, metrics.CRL{Issuer: pki.NameString(c.Issuer), Number: n, NextUpdate: c.NextUpdate})
	}
	snap.PoolSize, snap.LeasesUsed = s.pool.usage()
	return snap
}

// usage is how many addresses the pool can hand out and how many live
// sessions hold.
func (p *addrPool) usage() (size, inUse int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Not the network, gateway or broadcast address.
	return p.size - 3, len(p.inUse) // size: capped at maxScan for IPv6
}
