package server

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/server/policy"
	"github.com/sallyport/sallyport/tunnel"
)

// TestDropLogRateLimit: one line per device with new drops per window, at
// most dropLogBurst, the rest in one summary line; nothing new, no line.
func TestDropLogRateLimit(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var sessions []*session
	for i := range dropLogBurst + 5 {
		ss := &session{id: pki.Identity{Device: fmt.Sprintf("dev%02d", i)}}
		ss.logp.Store(log.With(identityAttrs(ss.id)...))
		ss.grant.Store(&policy.Grant{Names: []string{"eng"}})
		ss.drops.Add(tunnel.DropPolicy, 2)
		sessions = append(sessions, ss)
	}
	var d dropLog
	now := time.Now()
	d.flush(now, sessions, log)
	out := buf.String()
	if n := strings.Count(out, `msg="packets dropped" device=`); n != dropLogBurst {
		t.Fatalf("%d device lines, want %d:\n%s", n, dropLogBurst, out)
	}
	if !strings.Contains(out, "devices_not_logged=5 drops_not_logged=10") || !strings.Contains(out, "device=dev00 ") || !strings.Contains(out, " policy=2 ") {
		t.Fatalf("summary or counts missing:\n%s", out)
	}
	buf.Reset()
	sessions[0].drops.Add(tunnel.DropSpoofed, 1)
	d.flush(now.Add(time.Second), sessions, log) // same window
	if buf.Len() != 0 {
		t.Fatalf("logged inside the window: %s", buf.String())
	}
	d.flush(now.Add(dropLogWindow), sessions, log)
	if out := buf.String(); strings.Count(out, "\n") != 1 || !strings.Contains(out, "device=dev00 ") || !strings.Contains(out, "spoofed=1") || strings.Contains(out, "policy=") {
		t.Fatalf("next window, want only dev00's new drop:\n%s", out)
	}
}
