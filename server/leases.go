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
// A missing file is logged and the pools start empty; a malformed entry is
// dropped alone; a damaged file is kept aside under a unique name
// (<file>.corrupt-<time>) and what could be read of it is restored. The
// file is read through internal/userfile: a path that is not a regular
// file (FIFO, directory, device) is the only problem that stops the start.

import (
	"bytes"
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
	"github.com/sallyport/sallyport/internal/userfile"
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
// than ttl. A damaged file never stops the gateway: a malformed entry is
// dropped and logged (the others are restored), a file damaged as a whole
// (not JSON past some point, another version, over the size cap) is kept
// aside under a name of its own (<file>.corrupt-<time>, never replacing an
// earlier one) and the entries read before the damage are restored. Only a
// path that is not a regular file (a directory, FIFO or device: a config
// mistake the gateway could never save to) is an error.
func (p *addrPools) loadLeases(path string, ttl time.Duration, log *slog.Logger) error {
	b, err := userfile.Read(path, maxLeaseFile)
	var rd leaseRead
	switch {
	case errors.Is(err, fs.ErrNotExist):
		log.Info("no lease file yet; address pools start empty", "lease_file", path)
		return nil
	case errors.Is(err, userfile.ErrNotRegular):
		return fmt.Errorf("key \"tunnel.lease_file\": %w", err)
	case errors.Is(err, userfile.ErrTooLarge):
		rd.damage = userfile.Cause(err)
	case err != nil:
		// Unreadable (permissions, I/O): the file may be fine; leave it.
		log.Error("lease file unreadable; address pools start empty and devices may get new addresses", "lease_file", path,
			"error", err.Error())
		return nil
	default:
		rd = parseLeases(b)
	}
	for i, d := range rd.dropped {
		if i == maxDroppedLogged {
			log.Warn("more malformed lease entries dropped (not logged one by one)", "lease_file", path, "entries", len(rd.dropped)-i)
			break
		}
		log.Warn("malformed lease entry dropped", "lease_file", path, "entry", d.index, "error", d.err.Error(), "text", d.text)
	}
	if rd.damage != nil {
		aside, aerr := setAside(path, time.Now())
		if aerr != nil {
			aside = "- (" + aerr.Error() + ")"
		}
		log.Error("lease file damaged; restoring only the entries before the damage, devices may get new addresses", "lease_file", path,
			"error", rd.damage.Error(), "entries_read", len(rd.entries), "kept_as", aside)
	}
	byFamily := []map[string]poolLease{{}, {}}
	cutoff := time.Now().Add(-ttl)
	expired := 0
	for _, e := range rd.entries {
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
		"addresses_skipped", skipped, "entries_dropped", len(rd.dropped))
	if len(rd.dropped) > 0 {
		p.changed() // the next save writes the file without them
	}
	return nil
}

// maxDroppedLogged is how many dropped lease entries get a line each.
const maxDroppedLogged = 20

// leaseRead is what parseLeases found in a lease file.
type leaseRead struct {
	entries []leaseEntry   // well-formed entries, in file order
	dropped []droppedLease // malformed entries, each dropped alone
	// damage is set when the file is damaged as a whole (entries then
	// holds those read before the damage, or none when the file is not
	// one we know how to read).
	damage error
}

// droppedLease is one malformed entry.
type droppedLease struct {
	index int    // 0-based position in "leases"
	text  string // the entry as written, cut to maxDroppedText bytes
	err   error
}

const maxDroppedText = 256

// parseLeases reads a lease file entry by entry, so one malformed entry
// costs that entry only.
func parseLeases(b []byte) leaseRead {
	var rd leaseRead
	dec := json.NewDecoder(bytes.NewReader(b))
	version := -1
	fail := func(err error) leaseRead {
		rd.damage = err
		if version != -1 && version != leaseFileVersion {
			rd.entries = nil
		}
		return rd
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fail(errors.New("not a JSON object"))
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fail(fmt.Errorf("at byte %d: %w", dec.InputOffset(), err))
		}
		switch tok {
		case "version":
			if err := dec.Decode(&version); err != nil {
				return fail(fmt.Errorf("key \"version\": %w", err))
			}
			if version != leaseFileVersion {
				return fail(fmt.Errorf("version %d, want %d", version, leaseFileVersion))
			}
		case "leases":
			if err := rd.readEntries(dec); err != nil {
				return fail(err)
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return fail(fmt.Errorf("at byte %d: %w", dec.InputOffset(), err))
			}
		}
	}
	if _, err := dec.Token(); err != nil {
		return fail(fmt.Errorf("at byte %d: %w", dec.InputOffset(), err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return fail(fmt.Errorf("text after the JSON object at byte %d", dec.InputOffset()))
	}
	if version == -1 {
		return fail(errors.New("no \"version\" key"))
	}
	return rd
}

// readEntries reads the "leases" array, keeping the entries that decode
// and dropping the others one by one.
func (rd *leaseRead) readEntries(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("key \"leases\": %w", err)
	}
	if tok == nil { // null: no leases
		return nil
	}
	if tok != json.Delim('[') {
		return errors.New("key \"leases\" is not a list")
	}
	for i := 0; dec.More(); i++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("lease entry %d: %w", i, err)
		}
		var e leaseEntry
		err := json.Unmarshal(raw, &e)
		if err == nil {
			err = e.check()
		}
		if err != nil {
			text := string(raw)
			if len(text) > maxDroppedText {
				text = text[:maxDroppedText] + "..."
			}
			rd.dropped = append(rd.dropped, droppedLease{i, text, err})
			continue
		}
		rd.entries = append(rd.entries, e)
	}
	if _, err := dec.Token(); err != nil { // ']'
		return fmt.Errorf("key \"leases\": %w", err)
	}
	return nil
}

// check refuses an entry that names no device.
func (e *leaseEntry) check() error {
	if e.Issuer == "" || e.Device == "" {
		return errors.New("no issuer or device")
	}
	if strings.ContainsRune(e.Issuer+e.Device, 0) {
		return errors.New("NUL byte in issuer or device")
	}
	return nil
}

// setAside renames a damaged lease file to a name no earlier one has
// (<path>.corrupt-<UTC time>[-N]) and returns it. It links before it
// removes, so an existing file of that name is never replaced.
func setAside(path string, now time.Time) (string, error) {
	base := path + ".corrupt-" + now.UTC().Format("20060102T150405Z")
	for n := 0; n < 100; n++ {
		aside := base
		if n > 0 {
			aside = fmt.Sprintf("%s-%d", base, n)
		}
		err := os.Link(path, aside)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("keep %s aside: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return aside, fmt.Errorf("keep %s aside: %w", path, err)
		}
		return aside, nil
	}
	return "", fmt.Errorf("keep %s aside: 100 earlier copies for this second", path)
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
	t := s.config().Tunnel
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
	path := s.config().Tunnel.LeaseFile
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
