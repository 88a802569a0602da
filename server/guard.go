package server

import (
	"log/slog"
	"maps"
	"sort"
	"sync"
	"time"
)

// Refused handshakes are logged one line each up to refusalLogBurst per
// refusalLogWindow; past that they are only counted, and one summary line
// per window gives the counts by reason. A flood of bad handshakes cannot
// fill the journal.
const (
	refusalLogBurst  = 20
	refusalLogWindow = 10 * time.Second
)

// refusalLog counts refused handshakes by reason and rate-limits their log
// lines.
type refusalLog struct {
	mu         sync.Mutex
	start      time.Time      // of the current window
	logged     int            // lines in the current window
	suppressed map[string]int // reason -> refusals not logged in this window
	total      map[string]uint64
}

// note counts one refusal and reports whether to log it.
func (l *refusalLog) note(now time.Time, reason string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total == nil {
		l.total, l.suppressed = map[string]uint64{}, map[string]int{}
	}
	l.total[reason]++
	if now.Sub(l.start) >= refusalLogWindow && len(l.suppressed) == 0 {
		l.start, l.logged = now, 0
	}
	if l.logged < refusalLogBurst {
		l.logged++
		return true
	}
	l.suppressed[reason]++
	return false
}

// flush writes the summary of the window that ended, if it suppressed
// anything, and starts a new window.
func (l *refusalLog) flush(now time.Time, log *slog.Logger) {
	l.mu.Lock()
	if len(l.suppressed) == 0 || now.Sub(l.start) < refusalLogWindow {
		l.mu.Unlock()
		return
	}
	sum := l.suppressed
	l.suppressed = map[string]int{}
	l.start, l.logged = now, 0
	l.mu.Unlock()
	reasons := make([]string, 0, len(sum))
	n := 0
	for r, c := range sum {
		reasons = append(reasons, r)
		n += c
	}
	sort.Strings(reasons)
	attrs := []any{"not_logged", n, "window", refusalLogWindow.String()}
	for _, r := range reasons {
		attrs = append(attrs, "reason_"+r, sum[r])
	}
	log.Warn("handshakes refused (summary; individual lines rate-limited)", attrs...)
}

// counts returns the refusals so far by reason.
func (l *refusalLog) counts() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.total)
}
