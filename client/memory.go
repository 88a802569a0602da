package client

// What the laptop remembers of the gateway's word, so that it fails closed
// from the first second of the next `up`: a laptop that boots behind a
// captive portal, or while the gateway is down, would otherwise send
// everything in the clear until its first session, although the gateway
// told it last time to hold a kill switch or a full tunnel.
//
// After each pushed config (a session's first, and every live push) the
// client writes the routes, the pushed kill_switch and whether the tunnel
// carried IPv6 to one small file per profile in its state directory
// (StateDirectory=, /var/lib/sallyport), atomically. At `up`, before the
// first connection, it reads it back: the kill switch comes on as
// wantKillSwitch would decide it for that config pushed again (with the
// client file's kill_switch, as while connected), and the pushed prefixes
// are refused (their unreachable routes, route.go) until the new session
// routes them into the tunnel. `down` removes what was applied but keeps
// the memory: a clean stop at shutdown is a `down` too, and the next boot
// must still fail closed.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/tunnel"
)

// memoryVersion is the format of the memory file; a file of another
// version is not trusted (and fails closed, like a corrupt one).
const memoryVersion = 1

// maxMemory bounds what is read back: the file holds a few routes.
const maxMemory = 1 << 20

// memory is the last pushed config's say on failing closed.
type memory struct {
	Version int `json:"version"`
	// At and Server say when and from which gateway (for people reading
	// the file and the log).
	At     time.Time `json:"at"`
	Server string    `json:"server,omitempty"`
	// Config is the client file (absolute path) whose sessions wrote it:
	// two files of one name in different directories share the file name
	// of their memory, and one must not start with the other's word.
	Config string `json:"config,omitempty"`
	// KillSwitch is the pushed kill_switch (nil: the gateway said nothing).
	KillSwitch *bool          `json:"kill_switch,omitempty"`
	Routes     []netip.Prefix `json:"routes"`
	// IPv6 says the tunnel had an IPv6 address (pushed IPv6 prefixes were
	// routed, not refused).
	IPv6 bool `json:"ipv6"`
}

// memoryOf is what to remember of pc, pushed by server to the profile of
// client file config.
func memoryOf(pc tunnel.Config, server, config string, now time.Time) memory {
	return memory{Version: memoryVersion, At: now.UTC(), Server: server, Config: config, KillSwitch: pc.KillSwitch,
		Routes: slices.Clone(pc.Routes), IPv6: pc.Address6.IsValid()}
}

// same reports whether m and o say the same (when and where aside).
func (m memory) same(o memory) bool {
	return m.Version == o.Version && m.Config == o.Config && slices.Equal(m.Routes, o.Routes) && m.IPv6 == o.IPv6 &&
		(m.KillSwitch == nil) == (o.KillSwitch == nil) && (m.KillSwitch == nil || *m.KillSwitch == *o.KillSwitch)
}

// bootRoutes are the remembered prefixes to refuse before the first
// session. With the kill switch off at boot (the client file says
// kill_switch = false, or the remembered config wants none) a family the
// prefixes cover whole is left out: refusing all of it would be a kill
// switch the employee or the admin turned off.
func (m memory) bootRoutes(killOn bool) []netip.Prefix {
	if killOn {
		return slices.Clone(m.Routes)
	}
	full4, full6 := coversAll(m.Routes, false), coversAll(m.Routes, true)
	var out []netip.Prefix
	for _, p := range m.Routes {
		if p.IsValid() && !(p.Addr().Is6() && full6) && !(p.Addr().Is4() && full4) {
			out = append(out, p)
		}
	}
	return out
}

// memoryFile is where the profile of cfg keeps its memory: one file per
// client config (named after it, as the profile is), in the state
// directory.
func memoryFile(cfg *Config) string {
	return filepath.Join(cfg.stateDirectory(), "profile-"+profileName(cfg)+".json")
}

// configPath is cfg's client file as an absolute path ("" without one).
func configPath(cfg *Config) string {
	if cfg.Path == "" {
		return ""
	}
	if abs, err := filepath.Abs(cfg.Path); err == nil {
		return abs
	}
	return cfg.Path
}

// profileName is the profile of cfg (Profile of its file), or "default"
// for a config that has no usable file name.
func profileName(cfg *Config) string {
	if cfg.Path != "" {
		if p := Profile(cfg.Path); p != "" && p != "." && p != ".." && !strings.ContainsAny(p, `/\`) {
			return p
		}
	}
	return "default"
}

// loadMemory reads the memory at path for the client file config. A
// missing file is (nil, nil): the profile never connected, and nothing is
// known. A file that cannot be read, is not a memory of this version, or
// was written by another client file of the same name is an error: the
// caller fails closed.
func loadMemory(path, config string) (*memory, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxMemory {
		return nil, fmt.Errorf("read %s: not a regular file of at most %d bytes", path, maxMemory)
	}
	var m memory
	dec := json.NewDecoder(f)
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if m.Version != memoryVersion {
		return nil, fmt.Errorf("read %s: version %d, want %d", path, m.Version, memoryVersion)
	}
	if m.Config != "" && config != "" && m.Config != config {
		return nil, fmt.Errorf("read %s: written by the sessions of %s, not of %s (two client files of one name)", path, m.Config, config)
	}
	return &m, nil
}

// saveMemory writes m to path atomically (a crash leaves the old file or
// the new one), creating the state directory if it is missing.
func saveMemory(path string, m memory) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}

// boot is what Run knows before the first connection about failing
// closed: the memory (nil when none), or why it could not be read.
type boot struct {
	mem  *memory
	err  error
	path string
}

// killAtStart decides whether Run installs the kill switch before the
// first connection. A table left by a crashed client is adopted (never
// dropped in between, so nothing leaks while the client reconnects).
// Otherwise the remembered config counts as pushed again: the kill switch
// is on exactly when wantKillSwitch would put it on for the client file's
// kill_switch and that config, so kill_switch = false in the file keeps
// it off only where the gateway's word would too (a remembered
// kill_switch = true wins, as it does while connected). A memory that
// cannot be read fails closed; a laptop that never connected has only the
// client file's word.
func killAtStart(local *bool, exists bool, b boot) bool {
	switch {
	case exists:
		return true
	case b.err != nil:
		return true
	case b.mem != nil:
		return wantKillSwitch(local, b.mem.KillSwitch, fullTunnel(b.mem.Routes))
	}
	return local != nil && *local
}
