package server

// Profiles for operators, through the admin socket (`sallyport server
// pprof`). Off unless [admin] pprof = true; never on the VPN listener. The
// socket is mode 0600 in a 0700 directory, so only the gateway's own user
// (and root) can ask.

import (
	"bytes"
	"context"
	"fmt"
	"runtime/pprof"
	"time"

	"github.com/sallyport/sallyport/internal/adminsock"
)

// MaxProfileSeconds bounds a CPU profile's duration.
const MaxProfileSeconds = 120

// ProfileKinds are the profiles `pprof` serves: "cpu" records for the
// requested seconds, the others are runtime/pprof's named profiles.
var ProfileKinds = []string{"cpu", "heap", "allocs", "goroutine", "block", "mutex", "threadcreate"}

// Profile is the answer to `pprof`: a profile in pprof's gzipped protobuf
// format, for `go tool pprof`.
type Profile struct {
	Kind    string `json:"kind"`
	Seconds int    `json:"seconds,omitempty"`
	Data    []byte `json:"data"`
}

// profile records the profile kind (for "cpu" during seconds, cut short if
// ctx ends). It refuses when [admin] pprof is off.
func (s *Server) profile(ctx context.Context, kind string, seconds int) (Profile, error) {
	if !s.config().Admin.Pprof {
		return Profile{}, fmt.Errorf("pprof is off on this gateway: set [admin] pprof = true in server.toml and restart")
	}
	p := Profile{Kind: kind}
	var buf bytes.Buffer
	if kind == "cpu" {
		if seconds < 1 || seconds > MaxProfileSeconds {
			return p, fmt.Errorf("pprof cpu: seconds %d out of range 1-%d", seconds, MaxProfileSeconds)
		}
		if err := pprof.StartCPUProfile(&buf); err != nil {
			return p, fmt.Errorf("pprof cpu: %w", err)
		}
		t := time.NewTimer(time.Duration(seconds) * time.Second)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		pprof.StopCPUProfile()
		p.Seconds, p.Data = seconds, buf.Bytes()
		return p, nil
	}
	prof := pprof.Lookup(kind)
	if prof == nil {
		return p, fmt.Errorf("pprof: unknown profile %q (one of %v)", kind, ProfileKinds)
	}
	if err := prof.WriteTo(&buf, 0); err != nil {
		return p, fmt.Errorf("pprof %s: %w", kind, err)
	}
	p.Data = buf.Bytes()
	return p, nil
}

// FetchProfile asks the gateway at the admin socket sock for a profile of
// kind (for "cpu", recorded during seconds) and returns its bytes.
func FetchProfile(sock, kind string, seconds int) ([]byte, error) {
	var p Profile
	wait := 10 * time.Second
	if kind == "cpu" {
		wait += time.Duration(seconds) * time.Second
	}
	if err := adminsock.CallTimeout(sock, adminsock.Request{Cmd: "pprof", Kind: kind, Seconds: seconds}, &p, wait); err != nil {
		return nil, err
	}
	if len(p.Data) == 0 {
		return nil, fmt.Errorf("pprof %s: empty profile", kind)
	}
	return p.Data, nil
}
