package tunnel

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"time"
)

// ReadRetry is what a TUN reader loop does with a failed Read: stop once the
// device is closed; otherwise log, skip that read (a packet the driver could
// not split, say) and go on, pausing when failures repeat so a broken
// device is slowed down rather than spun on. One per reader goroutine.
type ReadRetry struct {
	Log      *slog.Logger
	failures int
}

// Closed reports whether err means the device was closed.
func Closed(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF)
}

// Failed handles a read error: it returns false when the loop must end
// (the device is closed, or stopping is true), true to read again.
func (r *ReadRetry) Failed(err error, stopping bool) bool {
	if stopping || Closed(err) {
		return false
	}
	r.failures++
	r.Log.Warn("read TUN failed", "err", err, "consecutive", r.failures)
	if r.failures > 10 {
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

// OK records a successful read.
func (r *ReadRetry) OK() { r.failures = 0 }
