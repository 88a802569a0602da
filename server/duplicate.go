package server

// One device certificate on two machines (docs/trust.md, "One certificate
// on two laptops"): the session in place keeps the device.
//
// A newcomer whose device already holds a live session is a second
// machine with the same certificate (a copied bundle) or the same laptop
// coming back after it roamed, its old session dead but not yet noticed.
// The gateway asks the session in place: it sends it a keepalive, which a
// sallyport laptop answers at once (client.go), and waits up to
// probeTimeout for a sign of life from it: a frame (packets, a keepalive,
// a renewal; a Close is a device leaving, not an answer), or progress of
// its transport after the probe began (the TCP connection's bytes
// acknowledged or received in sequence, per the kernel's TCP_INFO; a
// packet on the QUIC connection), which only the machine holding the
// connection can make and which does not queue behind megabytes of
// traffic the way the answer can.
//   - It answers: the device is in use elsewhere. The newcomer is refused
//     with duplicate-device (the laptop retries at its normal backoff and
//     says its certificate is in use on another computer); the first such
//     refusal in dupWindow logs one WARN naming both addresses, and
//     `server status` (duplicates) and the metrics show it so the admin
//     can revoke.
//   - It does not: it is a zombie, and the newcomer replaces it (register,
//     reason replaced). So does a TLS-stream session whose own keepalives
//     are overdue already (a laptop on the datagram path sends none: QUIC
//     keeps its path alive, so its sessions are always probed).
//   - While a duplicate is recorded for the device (a newcomer was refused
//     within dupWindow), the device is in dispute: the session in place
//     keeps it until it ends by itself (its own timeout), answer or not, so
//     a thief retrying cannot wait for the one probe the laptop misses on a
//     bad link. A newcomer that gets the device during a dispute (the
//     session in place ended) is logged as a WARN naming both addresses.
// So a thief with a copy never takes the session of a laptop that is
// there, and a roaming laptop is never locked out by its own dead
// session: it waits for one probe at most (during a dispute, for its old
// session's timeout). What no rule can tell is which of two machines with
// one certificate is the owner's: the admin revokes it.

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
	// metrics after its last refusal, and how long the device stays in
	// dispute; a new one after it logs again.
	dupWindow = time.Minute
	// probePoll is how often the probe looks at the transport's counters.
	probePoll = 20 * time.Millisecond
)

// checkDuplicate is the rule above for a newcomer ss: nil when it may go
// on (no live session, or a zombie it will replace), else the refusal.
func (s *Server) checkDuplicate(ss *session) error {
	s.sessMu.Lock()
	old := s.byKey[ss.key]
	s.sessMu.Unlock()
	now := time.Now()
	if old == nil {
		if prev, disputed := s.dups.takeOver(ss.key, ss.remote, now); disputed {
			ss.logger().Warn("a device in use on two machines connected again after its session ended: this connection holds it now; revoke the certificate if this machine is not its owner's",
				"remote_before", prev, "remote_now", ss.remote)
		}
		return nil
	}
	probe := s.probeTimeout
	if probe <= 0 {
		probe = defaultProbeTimeout
	}
	disputed := s.dups.disputed(ss.key, now)
	// A laptop on the TLS stream sends a keepalive every tunnel.keepalive:
	// one overdue by a probe's time is gone already.
	if idle := now.Sub(time.Unix(0, old.lastRecv.Load())); !disputed && old.link == nil && idle > s.config().Tunnel.Keepalive+defaultProbeTimeout {
		old.logger().Info("session silent past its keepalive; a new connection of the same device replaces it", "idle", idle.Round(time.Millisecond).String(), "new_remote", ss.remote)
		return nil
	}
	answered := old.probe(probe, !s.probeNoTransport)
	if !answered && !disputed {
		old.logger().Info("session did not answer a probe; a new connection of the same device replaces it", "probe_timeout", probe.String(), "new_remote", ss.remote)
		return nil
	}
	if s.dups.note(ss.key, ss.id, old.remote, ss.remote, time.Now()) {
		ss.logger().Warn("one device certificate is in use on two machines: the session in place keeps it and new connections of it are refused (reason duplicate-device) while it lives; one of the two is not the owner's (not necessarily this one): revoke the certificate",
			"remote_a", old.remote, "remote_b", ss.remote, "session_since", old.since.UTC().Format(time.RFC3339))
	}
	why := fmt.Errorf("the device's session from %s is live (it answered a probe)", old.remote)
	if !answered {
		why = fmt.Errorf("the device's session from %s keeps it until it ends: the certificate was used from two machines within %v", old.remote, dupWindow)
	}
	return &refusal{tunnel.ReasonDuplicate, ss.id.Device, why}
}

// liveProbe is one probe of a session: heard is closed by the first frame
// that arrives from the device after it started, failed when the
// keepalive could not be written.
type liveProbe struct {
	heard, failed chan struct{}
	once          sync.Once
}

// probe sends the device a keepalive and reports whether it shows life
// within d: a frame from it (heard), or, with transport, progress of its
// connection since the probe began (transportMark). Concurrent probes of
// one session share one keepalive. The keepalive waits for a write in
// progress, on a goroutine of its own, so a full send buffer cannot
// stretch the probe past d.
func (ss *session) probe(d time.Duration, transport bool) bool {
	var moved func() bool
	if transport {
		moved = ss.transportMark()
	}
	ss.probeMu.Lock()
	p := ss.probing
	first := p == nil
	if first {
		p = &liveProbe{heard: make(chan struct{}), failed: make(chan struct{})}
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
		// After any write in progress (a round of packets: the device
		// answers keepalives, not traffic), on a goroutine of its own
		// bounded by the writer's deadline; one at a time per session (a
		// keepalive still queued from an earlier probe serves this one).
		if ss.probeWriting.CompareAndSwap(false, true) {
			go func() {
				defer ss.probeWriting.Store(false)
				if err := ss.w.WriteControl(tunnel.FrameKeepalive, nil); err != nil {
					close(p.failed) // the stream is broken: nobody is there
				}
			}()
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	var poll <-chan time.Time
	if moved != nil {
		tick := time.NewTicker(probePoll)
		defer tick.Stop()
		poll = tick.C
	}
	for {
		select {
		case <-p.heard:
			return !ss.ended()
		case <-poll:
			if moved() {
				return !ss.ended()
			}
		case <-p.failed:
			return false
		case <-ss.done:
			return false
		case <-t.C:
			return false
		}
	}
}

// ended reports whether the session has been closed.
func (ss *session) ended() bool {
	select {
	case <-ss.done:
		return true
	default:
		return false
	}
}

// transportMark returns a check of whether the session's connection has
// heard from the device since the mark: bytes of the TLS stream's TCP
// connection acknowledged or received in sequence, a packet on the
// datagram path's QUIC connection (authenticated by its keys). nil when
// the transport cannot say (not Linux, not TCP).
func (ss *session) transportMark() func() bool {
	switch {
	case ss.qc != nil:
		p0 := ss.qc.ConnectionStats().PacketsReceived
		return func() bool { return ss.qc.ConnectionStats().PacketsReceived > p0 }
	case ss.raw != nil:
		n0, ok := tcpProgress(ss.raw)
		if !ok {
			return nil
		}
		return func() bool { n, ok := tcpProgress(ss.raw); return ok && n > n0 }
	}
	return nil
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

// disputed reports whether a newcomer of key was refused within dupWindow
// of now.
func (g *dupGuard) disputed(key string, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.expireLocked(now)
	return g.keys[key] != nil
}

// takeOver records that a connection from remote gets a disputed device
// whose session ended; it returns the holder before and whether the device
// was in dispute.
func (g *dupGuard) takeOver(key, remote string, now time.Time) (prev string, disputed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.expireLocked(now)
	d := g.keys[key]
	if d == nil {
		return "", false
	}
	prev, d.Holder = d.Holder, remote
	return prev, true
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
