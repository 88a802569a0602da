package server

// One device certificate on two machines (docs/trust.md, "One certificate
// on two machines"): the session in place keeps the device.
//
// A newcomer whose device already holds a live session is a second
// machine with the same certificate (a copied bundle) or the same laptop
// coming back after it roamed, its old session dead but not yet noticed.
// The gateway asks the session in place: it sends it a keepalive, which a
// sallyport laptop answers at once (client.go), and waits up to
// probeTimeout for any frame from it.
//   - It answers: the device is in use elsewhere. The newcomer is refused
//     with duplicate-device (the laptop retries at its normal backoff and
//     says its certificate is in use on another computer); the first such
//     refusal in dupWindow logs one WARN naming both addresses, and
//     `server status` (duplicates) and the metrics show it so the admin
//     can revoke.
//   - It does not (or its own keepalives are overdue already): it is a
//     zombie, and the newcomer replaces it (register, reason replaced).
// So a thief with a copy never takes the session of a laptop that is
// there, and a roaming laptop is never locked out by its own dead
// session: it waits for one probe at most.

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/tunnel"
)

// Bounds of the duplicate-device rule.
const (
	// defaultProbeTimeout is how long a live session has to answer the
	// probe: many round trips of a slow network.
	defaultProbeTimeout = 2 * time.Second
	// dupWindow is how long a duplicate stays in `server status` and the
	// metrics after its last refusal; a new one after it logs again.
	dupWindow = time.Minute
)

// checkDuplicate is the rule above for a newcomer ss: nil when it may go
// on (no live session, or a zombie it will replace), else the refusal.
func (s *Server) checkDuplicate(ss *session) error {
	s.sessMu.Lock()
	old := s.byKey[ss.key]
	s.sessMu.Unlock()
	if old == nil {
		return nil
	}
	probe := s.probeTimeout
	if probe <= 0 {
		probe = defaultProbeTimeout
	}
	// A laptop sends a keepalive every tunnel.keepalive: one overdue by a
	// probe's time is gone already.
	if idle := time.Since(time.Unix(0, old.lastRecv.Load())); idle > s.config().Tunnel.Keepalive+defaultProbeTimeout {
		old.logger().Info("session silent past its keepalive; a new connection of the same device replaces it", "idle", idle.Round(time.Millisecond).String(), "new_remote", ss.remote)
		return nil
	}
	if !old.probe(probe) {
		old.logger().Info("session did not answer a probe; a new connection of the same device replaces it", "probe_timeout", probe.String(), "new_remote", ss.remote)
		return nil
	}
	if s.dups.note(ss.key, ss.id, old.remote, ss.remote, time.Now()) {
		ss.logger().Warn("one device certificate is in use on two machines: the session in place keeps it and new connections of it are refused (reason duplicate-device) while it answers; revoke the certificate if the other machine is not its owner's",
			"remote_a", old.remote, "remote_b", ss.remote, "session_since", old.since.UTC().Format(time.RFC3339))
	}
	return &refusal{tunnel.ReasonDuplicate, ss.id.Device, fmt.Errorf("the device's session from %s is live (it answered a probe)", old.remote)}
}

// liveProbe is one probe of a session: heard is closed by the first frame
// that arrives from the device after it started.
type liveProbe struct {
	heard chan struct{}
	once  sync.Once
}

// probe sends the device a keepalive and reports whether anything comes
// back from it within d. Concurrent probes of one session share one
// keepalive. A write already in progress (TryWriteControl does not wait
// for it) is traffic the device answers too.
func (ss *session) probe(d time.Duration) bool {
	ss.probeMu.Lock()
	p := ss.probing
	first := p == nil
	if first {
		p = &liveProbe{heard: make(chan struct{})}
		ss.probing = p
		ss.heardFrom.Store(p)
	}
	ss.probeMu.Unlock()
	if first {
		defer func() {
			ss.probeMu.Lock()
			ss.probing = nil
			ss.probeMu.Unlock()
			ss.heardFrom.CompareAndSwap(p, nil)
		}()
		if _, err := ss.w.TryWriteControl(tunnel.FrameKeepalive, nil); err != nil {
			return false // the stream is broken: nobody is there
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.heard:
		return true
	case <-ss.done:
		return false
	case <-t.C:
		return false
	}
}

// heard records that a frame came from the device now (its last-received
// time, and an answer to a probe waiting for one).
func (ss *session) heard(now time.Time) {
	ss.lastRecv.Store(now.UnixNano())
	if p := ss.heardFrom.Load(); p != nil {
		p.once.Do(func() { close(p.heard) })
	}
}

// DuplicateStatus is one device found in use on two machines, in
// `server status` (duplicates) within a minute of its last refusal.
type DuplicateStatus struct {
	Device      string    `json:"device"`
	User        string    `json:"user"`
	Serial      string    `json:"serial"`
	Fingerprint string    `json:"fingerprint"`
	Holder      string    `json:"holder_remote"` // the session in place, which keeps the device
	Other       string    `json:"other_remote"`  // the last connection refused
	First       time.Time `json:"first"`
	Last        time.Time `json:"last"`
	Refused     uint64    `json:"refused"`
}

// dupGuard remembers the devices found in use on two machines.
type dupGuard struct {
	mu   sync.Mutex
	keys map[string]*DuplicateStatus
}

// note records a newcomer from other refused because the session from
// holder answered; it reports whether this starts a new entry (the caller
// logs the warning once per entry).
func (g *dupGuard) note(key string, id pki.Identity, holder, other string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.expireLocked(now)
	if g.keys == nil {
		g.keys = map[string]*DuplicateStatus{}
	}
	d := g.keys[key]
	fresh := d == nil
	if fresh {
		d = &DuplicateStatus{Device: id.Device, User: id.User, Serial: id.Serial, Fingerprint: id.Fingerprint, First: now}
		g.keys[key] = d
	}
	d.Holder, d.Other, d.Last = holder, other, now
	d.Refused++
	return fresh
}

// list returns the entries refused within dupWindow of now, by device.
func (g *dupGuard) list(now time.Time) []DuplicateStatus {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.expireLocked(now)
	out := make([]DuplicateStatus, 0, len(g.keys))
	for _, d := range g.keys {
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out
}

func (g *dupGuard) expireLocked(now time.Time) {
	for k, d := range g.keys {
		if now.Sub(d.Last) > dupWindow {
			delete(g.keys, k)
		}
	}
}
