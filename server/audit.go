package server

// The audit trail (docs/monitoring.md, "Logs"): every session event (up, refused,
// replaced, re-checked, closed) is one line that carries the device's
// identity, its policies and the reason; with [log] log_drops = true the
// gateway also logs, per device, the packets it dropped, rate-limited.

import (
	"context"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/server/policy"
	"github.com/sallyport/sallyport/tunnel"
)

// identityAttrs is a certificate identity as log attributes.
func identityAttrs(id pki.Identity) []any {
	return []any{"device", id.Device, "user", id.User, "groups", id.Groups, "issuer", id.Issuer,
		"serial", id.Serial, "fingerprint", id.Fingerprint}
}

// logRecheck logs the re-check of a live session on reload that it
// survived: at info when its grant changed, at debug otherwise (a reload
// of a large fleet would otherwise log every device).
func (ss *session) logRecheck(old, cur *policy.Grant) {
	level := slog.LevelDebug
	if !old.Equal(cur) {
		level = slog.LevelInfo
	}
	ss.logger().Log(context.Background(), level, "session re-checked", "reason", "reload", "policies", cur.Names, "previous_policies", old.Names,
		"allow", cur.Allow)
}

// Drop logging: at most dropLogBurst device lines per dropLogWindow; the
// devices beyond that are summed up in one line.
const (
	dropLogBurst  = 20
	dropLogWindow = 10 * time.Second
)

// dropLog remembers each session's drop counters at the last log line.
type dropLog struct {
	mu   sync.Mutex
	last time.Time
	seen map[*session]map[string]uint64
}

// flush logs, once per dropLogWindow, one line per device that dropped
// packets since the last window (counts by reason), at most dropLogBurst,
// and a summary of the rest.
func (d *dropLog) flush(now time.Time, sessions []*session, log *slog.Logger) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if now.Sub(d.last) < dropLogWindow {
		return
	}
	d.last = now
	prev := d.seen
	d.seen = make(map[*session]map[string]uint64, len(sessions))
	sort.Slice(sessions, func(i, j int) bool { return sessions[i].id.Device < sessions[j].id.Device })
	logged, more, moreDrops := 0, 0, uint64(0)
	for _, ss := range sessions {
		cur := ss.traffic().Drops
		d.seen[ss] = cur
		var attrs []any
		total := uint64(0)
		for _, reason := range tunnel.GatewayDrops {
			r := reason.String()
			if n := cur[r] - prev[ss][r]; n > 0 {
				attrs = append(attrs, r, n)
				total += n
			}
		}
		if total == 0 {
			continue
		}
		if logged >= dropLogBurst {
			more++
			moreDrops += total
			continue
		}
		logged++
		ss.logger().Info("packets dropped", append(slices.Clip(attrs), "policies", ss.grant.Load().Names, "window", dropLogWindow.String())...)
	}
	if more > 0 {
		log.Warn("packets dropped (summary; per-device lines rate-limited)", "devices_not_logged", more, "drops_not_logged", moreDrops,
			"window", dropLogWindow.String())
	}
}
