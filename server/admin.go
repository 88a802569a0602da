package server

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/sallyport/sallyport/internal/adminsock"
	"github.com/sallyport/sallyport/tunnel"
)

// Status is the answer to `sallyport server status`.
type Status struct {
	Started time.Time `json:"started"`
	Listen  string    `json:"listen"`
	Device  string    `json:"device"`
	Address string    `json:"address"`
	// Address6 is the gateway's IPv6 tunnel address on a dual-stack gateway.
	Address6  string `json:"address6,omitempty"`
	NoSession uint64 `json:"dropped_no_session"`
	CPUs      int    `json:"cpus"` // GOMAXPROCS now (tunnel.cpus)
	// Refused counts refused handshakes and sessions since start, by
	// reason (docs/trust.md).
	Refused map[string]uint64 `json:"refused"`
	// CRLNumber and CRLNextUpdate describe the CRL in force (empty and
	// zero without one); CRLStale is true past its nextUpdate.
	CRLNumber     string    `json:"crl_number,omitempty"`
	CRLNextUpdate time.Time `json:"crl_next_update,omitzero"`
	CRLStale      bool      `json:"crl_stale"`
	// CAs counts the live sessions by the CA their chain ends at (its
	// subject): during a CA rotation, how many devices still hold a
	// certificate of the old one.
	CAs map[string]int `json:"cas"`
	// Renewal describes the online issuer when renewal is configured.
	Renewal *RenewalStatus `json:"renewal,omitempty"`
	// Handshakes are the connections holding handshake slots now; what
	// was closed before authentication is counted in Refused
	// (first-byte-timeout, hello-timeout, evicted, per-source-limit,
	// handshakes-full).
	Handshakes HandshakeStatus `json:"handshakes"`
	// Duplicates are the devices found in use on two machines within the
	// last minute (duplicate.go): the session in place kept each, the
	// other machine was refused with duplicate-device. Revoke the
	// certificate if the other machine is not its owner's.
	Duplicates []DuplicateStatus `json:"duplicates"`
	Sessions   []SessionStatus   `json:"sessions"`
}

// HandshakeStatus is the handshake slots in `server status` (preauth.go).
type HandshakeStatus struct {
	InFlight     int `json:"in_flight"`
	WaitingHello int `json:"waiting_hello"`  // not past their ClientHello: evictable
	PastHello    int `json:"past_hello"`     // past it, certificate not checked yet: evictable to share slots out
	Sources      int `json:"sources"`        // addresses (IPv6: /64s) holding slots
	QUICInFlight int `json:"quic_in_flight"` // QUIC handshakes of the datagram path (their own slots; quic.go)
	Max          int `json:"max"`            // tls.max_handshakes
	MaxPerSource int `json:"max_per_source"`
}

// RenewalStatus is the gateway's renewal in `server status`.
type RenewalStatus struct {
	Issuer         string    `json:"issuer"`           // the online issuer's subject
	IssuerNotAfter time.Time `json:"issuer_not_after"` // when it stops issuing
	Lifetime       string    `json:"lifetime"`         // of the certificates it issues
	RenewAt        float64   `json:"renew_at"`
	Renewed        uint64    `json:"renewed"` // renewals since start
	Refused        uint64    `json:"refused"` // refused renewals since start
}

// SessionStatus describes one live device session.
type SessionStatus struct {
	Device string   `json:"device"`
	User   string   `json:"user"`
	Groups []string `json:"groups"`
	Issuer string   `json:"issuer"`
	Serial string   `json:"serial"`
	// Path is how the device is connected: "tls" (the TLS stream) or
	// "quic" (the datagram path, CONNECT-IP over QUIC).
	Path    string `json:"path"`
	Address string `json:"address"`
	// Address6 is the device's IPv6 tunnel address on a dual-stack gateway.
	Address6     string    `json:"address6,omitempty"`
	Remote       string    `json:"remote"`
	Policies     []string  `json:"policies"`
	Since        time.Time `json:"since"`
	BytesIn      uint64    `json:"bytes_in"`
	BytesOut     uint64    `json:"bytes_out"`
	PacketsIn    uint64    `json:"packets_in"`
	PacketsOut   uint64    `json:"packets_out"`
	Flows        int       `json:"flows"`
	CertNotAfter time.Time `json:"cert_not_after"`
	// Lineage is the serial of the device's enrollment certificate (Serial
	// itself until the first renewal); revoking it cuts every renewal.
	Lineage string `json:"lineage"`
	// CA is the subject of the CA the device's chain ends at.
	CA string `json:"ca"`
	// Renewal: the session negotiated renewal; Renewals counts the
	// renewals it made.
	Renewal  bool       `json:"renewal"`
	Renewals int        `json:"renewals"`
	Dropped  DropStatus `json:"dropped"`
}

// DropStatus counts a session's dropped packets by reason: one field per
// tunnel.GatewayDrops reason, named by its word (TestDropStatusFields).
type DropStatus struct {
	Spoofed   uint64 `json:"spoofed"`
	Policy    uint64 `json:"policy"`
	NoFlow    uint64 `json:"no_flow"`
	QueueFull uint64 `json:"queue_full"`
	Malformed uint64 `json:"malformed"`
	// Congestion counts bulk packets dropped on purpose because the
	// gateway fell behind the device's stream (tunnel.AQM).
	Congestion uint64 `json:"congestion"`
}

func dropStatus(c *tunnel.DropCounts) DropStatus {
	var d DropStatus
	for _, r := range tunnel.GatewayDrops {
		if f := d.field(r); f != nil { // a reason without its field fails TestDropStatusFields
			*f = c.Load(r)
		}
	}
	return d
}

// Get returns the count for r (0 for a reason the gateway does not count).
func (d DropStatus) Get(r tunnel.DropReason) uint64 {
	if f := d.field(r); f != nil {
		return *f
	}
	return 0
}

// field is d's counter of r, nil for a reason the gateway does not count:
// the one place that pairs a field with its reason.
func (d *DropStatus) field(r tunnel.DropReason) *uint64 {
	switch r {
	case tunnel.DropSpoofed:
		return &d.Spoofed
	case tunnel.DropPolicy:
		return &d.Policy
	case tunnel.DropNoFlow:
		return &d.NoFlow
	case tunnel.DropQueueFull:
		return &d.QueueFull
	case tunnel.DropMalformed:
		return &d.Malformed
	case tunnel.DropCongestion:
		return &d.Congestion
	}
	return nil
}

// Status reports the gateway and its sessions, sorted by device.
func (s *Server) Status() Status {
	snap := s.snap.Load() // config and trust of one moment
	cfg, t := snap.cfg, snap.trust
	st := Status{Started: s.started, Listen: cfg.Listen, Address: s.pool.primary().Gateway().String(), NoSession: s.noRoute.Load(), CPUs: s.procs.Current(),
		Refused: s.refusals.counts(), CRLNextUpdate: t.crl.NextUpdate(), CRLStale: t.crlStaleAt(time.Now())}
	if s.pool.dual() {
		st.Address6 = s.pool.v6.Gateway().String()
	}
	if st.Refused == nil {
		st.Refused = map[string]uint64{}
	}
	if n := t.crlNumber(); n != nil {
		st.CRLNumber = n.String()
	}
	if s.dev != nil {
		st.Device = s.dev.Name()
	}
	st.Handshakes.InFlight, st.Handshakes.WaitingHello, st.Handshakes.PastHello, st.Handshakes.Sources = s.shakes.counts()
	st.Handshakes.Max, st.Handshakes.MaxPerSource = cfg.TLS.MaxHandshakes, cfg.TLS.MaxHandshakesPerSource
	st.Handshakes.QUICInFlight, _, _, _ = s.qshakes.counts()
	st.Duplicates = s.dups.list(time.Now())
	st.CAs = map[string]int{}
	for _, ss := range s.sessions() {
		row := ss.status()
		st.Sessions = append(st.Sessions, row)
		st.CAs[row.CA]++
	}
	if rn := t.renew; rn != nil {
		ok, refused := s.meters.renewals()
		st.Renewal = &RenewalStatus{Issuer: rn.issuer.Cert().Subject.String(), IssuerNotAfter: rn.issuer.Cert().NotAfter,
			Lifetime: rn.lifetime.String(), RenewAt: rn.renewAt, Renewed: ok, Refused: refused}
	}
	sort.Slice(st.Sessions, func(i, j int) bool { return st.Sessions[i].Device < st.Sessions[j].Device })
	if st.Sessions == nil {
		st.Sessions = []SessionStatus{}
	}
	return st
}

// Kick ends every session of the named device (CN); it reports how many.
func (s *Server) Kick(device string) int {
	n := 0
	for _, ss := range s.sessions() {
		if ss.id.Device == device {
			ss.close(tunnel.ReasonKicked, nil)
			n++
		}
	}
	return n
}

func (s *Server) handleAdmin(ctx context.Context, req adminsock.Request) (any, error) {
	switch req.Cmd {
	case "status":
		return s.Status(), nil
	case "kick":
		if req.Device == "" {
			return nil, fmt.Errorf("kick: no device named")
		}
		if s.Kick(req.Device) == 0 {
			return nil, fmt.Errorf("kick: no session for device %q", req.Device)
		}
		return map[string]string{"kicked": req.Device}, nil
	case "drain":
		n := len(s.sessions())
		s.drainReq.request()
		return map[string]any{"draining": true, "sessions": n, "drain_timeout": s.config().DrainTimeout.String()}, nil
	case "reload":
		s.Reload("admin")
		return map[string]bool{"reloaded": true}, nil
	case "pprof":
		return s.profile(ctx, req.Kind, req.Seconds)
	}
	return nil, fmt.Errorf("unknown command %q", req.Cmd)
}

// fileStamp identifies a version of a watched file.
type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
	err  bool
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{err: true}
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size(), ino: inode(fi)}
}

// watchInterval is how often the config, CA and CRL files are checked, well
// inside the one second within which a revocation must reach live sessions.
const watchInterval = 250 * time.Millisecond

// routineWatch reloads when server.toml, the client CA or the CRL changes
// (written in place or replaced by rename), and re-checks certificate
// validity of live sessions. It also gives freed memory back to the OS
// when sessions have gone (memreturn.go) and reads the host's addresses
// again every ownRefresh for the packet filter (own.go).
func (s *Server) routineWatch(ctx context.Context) {
	defer s.wg.Done()
	files := func() []string {
		c := s.config()
		out := []string{c.Path, c.TLS.ClientCA}
		if c.TLS.CRL != "" {
			out = append(out, c.TLS.CRL)
		}
		if c.Renewal.Enabled() { // a new issuer or CA bundle copied in place
			out = append(out, c.Renewal.IssuerCert, c.Renewal.IssuerKey, c.Renewal.CABundle)
		}
		return out
	}
	seen := map[string]fileStamp{}
	for _, f := range files() {
		seen[f] = stampOf(f)
	}
	tick := time.NewTicker(watchInterval)
	defer tick.Stop()
	ownRead := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s.refusals.flush(now, s.log)
			if s.config().Log.LogDrops {
				s.drops.flush(now, s.sessions(), s.log)
			}
			s.checkCRLFresh(now)
			s.returnMemory(now)
			if now.Sub(ownRead) >= ownRefresh {
				ownRead = now
				s.refreshOwn()
			}
		}
		changed := ""
		for _, f := range files() {
			st := stampOf(f)
			if st != seen[f] {
				seen[f] = st
				changed = f
			}
		}
		if changed != "" {
			s.Reload("file changed: " + changed)
		}
	}
}
