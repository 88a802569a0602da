package tunnel

import (
	"math"
	"time"
)

// AQM keeps the queue in front of a relay short when the relay itself is
// the bottleneck. A TCP flow inside the tunnel fills whatever queue is
// slowest; when that is the outer stream's receive buffer (the gateway or
// laptop cannot decrypt and forward as fast as the sender sends), the
// kernel grows that buffer to megabytes and never drops, so every packet
// in the tunnel, a ping or an ACK, waits behind it (TCP-over-TCP
// bufferbloat: 5 to 15 ms here). AQM watches that backlog once per batch
// and, like CoDel, starts dropping one bulk packet per decision when the
// backlog has stayed above Target for a whole Interval, dropping faster
// (Interval/sqrt(n)) while it stays there. The inner TCP flows slow down
// and the standing queue drains; short flows and ACKs are never chosen.
//
// The backlog is measured in bytes, not sojourn time, because the stream
// does not timestamp what it carries; Target is small against any link
// rate, and on a slow WAN link the receiver keeps up, so AQM never acts
// there. An AQM is used by one goroutine.
type AQM struct {
	Target   int           // bytes of unread backlog that count as a standing queue
	Interval time.Duration // how long it must stand before the first drop

	aboveSince time.Time // zero when below target
	dropping   bool
	dropNext   time.Time
	count      int
}

// Default AQM parameters: 256 KiB is under a millisecond at the rates
// where the relay can fall behind; 10 ms is long against the round trips
// of a tunnel that is CPU-bound and short against a burst.
const (
	DefaultAQMTarget   = 256 << 10
	DefaultAQMInterval = 10 * time.Millisecond
)

// NewAQM returns an AQM with the default parameters.
func NewAQM() *AQM { return &AQM{Target: DefaultAQMTarget, Interval: DefaultAQMInterval} }

// Drop reports whether one bulk packet of the batch read at now, with
// backlog bytes still unread behind it, should be dropped.
func (a *AQM) Drop(now time.Time, backlog int) bool {
	if backlog < a.Target {
		a.aboveSince = time.Time{}
		if a.dropping {
			a.dropping = false
		}
		return false
	}
	if a.aboveSince.IsZero() {
		a.aboveSince = now
		return false
	}
	if !a.dropping {
		if now.Sub(a.aboveSince) < a.Interval {
			return false
		}
		a.dropping = true
		// Resume near the last drop rate if the queue came back quickly.
		if now.Sub(a.dropNext) < 8*a.Interval && a.count > 2 {
			a.count -= 2
		} else {
			a.count = 1
		}
		a.dropNext = now.Add(a.next())
		return true
	}
	if now.Before(a.dropNext) {
		return false
	}
	a.count++
	a.dropNext = now.Add(a.next())
	return true
}

func (a *AQM) next() time.Duration {
	return time.Duration(float64(a.Interval) / math.Sqrt(float64(a.count)))
}

// BulkVictim picks the packet AQM drops from a batch: the largest TCP or
// UDP packet carrying at least minBulk bytes, or -1 when there is none (a
// batch of ACKs, pings and DNS is never thinned).
func BulkVictim(bufs [][]byte, sizes []int, n, offset int) int {
	const minBulk = 512
	best, bestLen := -1, minBulk-1
	for i := 0; i < n; i++ {
		p := bufs[i][offset : offset+sizes[i]]
		if len(p) <= bestLen || len(p) < 20 {
			continue
		}
		var proto byte
		switch p[0] >> 4 {
		case 4:
			proto = p[9]
		case 6:
			if len(p) < 40 {
				continue
			}
			proto = p[6]
		default:
			continue
		}
		if proto == 6 || proto == 17 {
			best, bestLen = i, len(p)
		}
	}
	return best
}
