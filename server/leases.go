package server

// Leases that survive a gateway restart. The pools (addrpool.go) live in
// memory; this file keeps them in tunnel.lease_file (JSON, written
// atomically: a temporary file in the same directory, fsync, rename, fsync
// of the directory), keyed by the certificate's issuer and device identity,
// so LAN firewall rules and logs keyed on tunnel addresses keep working.
// A new, moved or dropped lease is saved within leaseSaveDelay by
// routineSaveLeases; a change of last-seen times only (a device that
// reconnects, or leaves, keeping its address) within leaseSeenSave, so a
// fleet reconnecting all day does not rewrite the whole file every second
// (53 ms of CPU a save at 10,000 devices); and once more when the gateway
// stops. Idle leases expire after tunnel.lease_ttl.
// A missing or corrupt file is logged and the pools start empty (a corrupt
// one is kept beside as <file>.corrupt); nothing here stops the gateway.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
)

const (
	leaseFileVersion = 1
	leaseSaveDelay   = time.Second
	leaseSeenSave    = time.Minute
	leaseExpiryCheck = time.Hour
	maxLeaseFile     = 64 << 20
)

// leaseFile is the JSON document in tunnel.lease_file.
type leaseFile struct {
	Version int          `json:"version"`
	Leases  []leaseEntry `json:"leases"`
}

// leaseEntry is one device's addresses; either may be absent.
type leaseEntry struct {
	Issuer   string     `json:"issuer"`
	Device   string     `json:"device"`
	IPv4     netip.Addr `json:"ipv4,omitzero"`
	IPv6     netip.Addr `json:"ipv6,omitzero"`
	LastSeen time.Time  `json:"last_seen"`
}

// loadLeases restores the pools from path and drops leases idle for longer
// than ttl. Problems are logged, never returned: the pools then start with
// what could be read (usually nothing).
func (p *addrPools) loadLeases(path string, ttl time.Duration, log *slog.Logger) {
	f, err := readLeaseFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		log.Info("no lease file yet; address pools start empty", "lease_file", path)
		return
	case err != nil:
		aside := path + ".corrupt"
		if rerr := os.Rename(path, aside); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			aside = "-"
		}
		log.Error("lease file unreadable; address pools start empty and devices may get new addresses", "lease_file", path,
			"error", err.Error(), "kept_as", aside)
		return
	}
	byFamily := []map[string]poolLease{{}, {}}
	cutoff := time.Now().Add(-ttl)
	expired := 0
	for _, e := range f.Leases {
		if e.Issuer == "" || e.Device == "" || strings.ContainsRune(e.Issuer+e.Device, 0) {
			continue
		}
		if e.LastSeen.Before(cutoff) {
			expired++
			continue
		}
		k := e.Issuer + "\x00" + e.Device
		if e.IPv4.IsValid() {
			byFamily[0][k] = poolLease{e.IPv4, e.LastSeen}
		}
		if e.IPv6.IsValid() {
			byFamily[1][k] = poolLease{e.IPv6, e.LastSeen}
		}
	}
	restored, skipped := 0, 0
	for i, pool := range []*addrPool{p.v4, p.v6} {
		if pool == nil {
			skipped += len(byFamily[i])
			continue
		}
		sk := pool.Restore(byFamily[i])
		skipped += sk
		restored += len(byFamily[i]) - sk
	}
	log.Info("address leases restored", "lease_file", path, "addresses", restored, "expired_devices", expired,
		"addresses_skipped", skipped)
}

func readLeaseFile(path string) (*leaseFile, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxLeaseFile+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxLeaseFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxLeaseFile)
	}
	var f leaseFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	if f.Version != leaseFileVersion {
		return nil, fmt.Errorf("%s: version %d, want %d", path, f.Version, leaseFileVersion)
	}
	return &f, nil
}

// leaseEntries merges the pools' leases into one entry per device, sorted.
func (p *addrPools) leaseEntries() []leaseEntry {
	m := map[string]*leaseEntry{}
	for _, pool := range p.families() {
		for k, l := range pool.Snapshot() {
			e := m[k]
			if e == nil {
				iss, dev, _ := strings.Cut(k, "\x00")
				e = &leaseEntry{Issuer: iss, Device: dev}
				m[k] = e
			}
			if l.addr.Is4() {
				e.IPv4 = l.addr
			} else {
				e.IPv6 = l.addr
			}
			if l.seen.After(e.LastSeen) {
				e.LastSeen = l.seen
			}
		}
	}
	out := make([]leaseEntry, 0, len(m))
	for _, e := range m {
		e.LastSeen = e.LastSeen.UTC().Truncate(time.Second)
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Issuer != out[j].Issuer {
			return out[i].Issuer < out[j].Issuer
		}
		return out[i].Device < out[j].Device
	})
	return out
}

// saveLeases writes every lease to path atomically.
func (p *addrPools) saveLeases(path string) error {
	b, err := json.MarshalIndent(leaseFile{Version: leaseFileVersion, Leases: p.leaseEntries()}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	return atomicfile.Write(path, append(b, '\n'), 0o640)
}

// expire drops leases idle since before now-ttl and reports how many.
func (p *addrPools) expire(now time.Time, ttl time.Duration) int {
	n := 0
	for _, pool := range p.families() {
		n += pool.Expire(now.Add(-ttl))
	}
	return n
}

// routineSaveLeases saves the leases leaseSaveDelay after a change (so a
// reconnect storm writes the file a few times, not once per device) and
// expires idle ones every leaseExpiryCheck, until ctx ends. The caller
// saves once more after the sessions are gone.
func (s *Server) routineSaveLeases(ctx context.Context) {
	defer s.wg.Done()
	t := s.cfg.Load().Tunnel
	tick := time.NewTicker(leaseExpiryCheck)
	defer tick.Stop()
	seen := time.NewTicker(leaseSeenSave)
	defer seen.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-seen.C:
			if s.pool.seen.Load() {
				s.saveLeases()
			}
			continue
		case <-tick.C:
			if n := s.pool.expire(time.Now(), t.LeaseTTL); n > 0 {
				s.log.Info("idle address leases expired", "leases", n, "lease_ttl", t.LeaseTTL.String())
				s.pool.changed()
			}
			continue
		case <-s.pool.dirty:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(leaseSaveDelay):
		}
		s.saveLeases()
	}
}

// saveLeases writes the lease file, logging a failure once until the next
// success.
func (s *Server) saveLeases() {
	path := s.cfg.Load().Tunnel.LeaseFile
	s.pool.seen.Store(false) // before the snapshot: a change during the save is saved next time
	err := s.pool.saveLeases(path)
	if err != nil {
		s.pool.seen.Store(true) // retried within leaseSeenSave even if nothing changes
	}
	if err != nil && !s.leaseSaveFailing.Swap(true) {
		s.log.Error("cannot save address leases; devices may get new addresses after a restart", "lease_file", path, "error", err.Error())
	}
	if err == nil && s.leaseSaveFailing.Swap(false) {
		s.log.Info("address leases saved again", "lease_file", path)
	}
}
