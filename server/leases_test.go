package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/userfile"
)

func dualPools() *addrPools {
	return newAddrPools(newAddrPool(netip.MustParsePrefix("10.8.0.0/24")), newAddrPool(netip.MustParsePrefix("fd00:8::/112")))
}

func logTo(buf *bytes.Buffer) *slog.Logger { return slog.New(slog.NewTextHandler(buf, nil)) }

// TestLeasesRoundTrip: leases saved by one gateway are the addresses the
// next one hands out, for both families, keyed by issuer + device: the
// same device name under another CA is another device.
func TestLeasesRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "leases.json")
	p := dualPools()
	keys := []string{"CN=A\x00alice", "CN=A\x00bob", "CN=B\x00alice"}
	want := map[string][2]netip.Addr{}
	for _, k := range keys {
		a4, a6, err := p.Acquire(k, staticAddr{})
		if err != nil {
			t.Fatal(err)
		}
		want[k] = [2]netip.Addr{a4, a6}
	}
	p.Release(keys[0], want[keys[0]][0], want[keys[0]][1]) // one idle, two live: all saved
	if err := p.saveLeases(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("lease file: %v %v", fi, err)
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".leases*")); len(m) != 0 {
		t.Fatalf("temporary files left: %v", m)
	}

	// A new gateway: a newcomer first, then the old devices in reverse.
	q := dualPools()
	var log bytes.Buffer
	q.loadLeases(path, time.Hour, logTo(&log))
	if !strings.Contains(log.String(), "addresses=6") {
		t.Fatalf("log: %s", log.String())
	}
	n4, n6, _ := q.Acquire("CN=A\x00newcomer", staticAddr{})
	for i := len(keys) - 1; i >= 0; i-- {
		a4, a6, err := q.Acquire(keys[i], staticAddr{})
		if err != nil || a4 != want[keys[i]][0] || a6 != want[keys[i]][1] {
			t.Fatalf("%q: got %v %v (%v), want %v", keys[i], a4, a6, err, want[keys[i]])
		}
		if a4 == n4 || a6 == n6 {
			t.Fatalf("newcomer got %q's address", keys[i])
		}
	}
}

// TestLeasesBadFile: a missing, damaged, wrong-version or hostile file is
// logged and the pools start with what could be read (a damaged file is
// kept aside), malformed entries are dropped alone, and entries outside the
// pools are skipped.
func TestLeasesBadFile(t *testing.T) {
	tests := []struct {
		name, text, log string
		restored        int
		aside           bool
	}{
		{"missing", "", "no lease file yet", 0, false},
		{"not json", "{\"version\":1,\"leases\":[{", "lease file damaged", 0, true},
		{"binary", "\x00\xff\xfe", "lease file damaged", 0, true},
		{"wrong version", `{"version":2,"leases":[]}`, "version 2", 0, true},
		{"no version", `{"leases":[]}`, "no \\\"version\\\" key", 0, true},
		{"leases not a list", `{"version":1,"leases":{}}`, "not a list", 0, true},
		{"text after the object", `{"version":1,"leases":[]} x`, "text after the JSON object", 0, true},
		{"bad address", `{"version":1,"leases":[{"issuer":"CN=A","device":"x","ipv4":"10.8.0.300"}]}`, "malformed lease entry dropped", 0, false},
		{"outside pools and reserved", `{"version":1,"leases":[
			{"issuer":"CN=A","device":"a","ipv4":"10.9.0.5","last_seen":"2099-01-01T00:00:00Z"},
			{"issuer":"CN=A","device":"b","ipv4":"10.8.0.1","last_seen":"2099-01-01T00:00:00Z"},
			{"issuer":"CN=A","device":"c","ipv4":"10.8.0.255","ipv6":"fd00:9::5","last_seen":"2099-01-01T00:00:00Z"},
			{"issuer":"CN=A","device":"d","ipv4":"10.8.0.7","last_seen":"2099-01-01T00:00:00Z"},
			{"issuer":"CN=A","device":"e","ipv4":"10.8.0.7","last_seen":"2099-01-01T00:00:00Z"},
			{"issuer":"","device":"f","ipv4":"10.8.0.8","last_seen":"2099-01-01T00:00:00Z"}]}`, "addresses_skipped=5", 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "leases.json")
			if tt.text != "" {
				writeFile(t, path, tt.text)
			}
			p := dualPools()
			var log bytes.Buffer
			if err := p.loadLeases(path, time.Hour, logTo(&log)); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(log.String(), tt.log) {
				t.Fatalf("log %q, want %q", log.String(), tt.log)
			}
			if got := len(p.leaseEntries()); got != tt.restored {
				t.Fatalf("%d leases restored, want %d", got, tt.restored)
			}
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if tt.aside != (len(aside) == 1) {
				t.Fatalf("kept aside: %v, want %v", aside, tt.aside)
			}
			if tt.aside {
				if b, err := os.ReadFile(aside[0]); err != nil || string(b) != tt.text {
					t.Fatalf("the file kept aside is not the damaged file: %q %v", b, err)
				}
			}
			if a, _, err := p.Acquire("CN=A\x00z", staticAddr{}); err != nil || !a.IsValid() {
				t.Fatalf("pool unusable after a bad file: %v", err)
			}
			if err := p.saveLeases(path); err != nil { // and the next save repairs it
				t.Fatal(err)
			}
		})
	}
}

// TestLeasesMalformedEntry: among 100 good leases, a malformed entry (a
// bad address, a wrong type, no device) costs that entry only, each logged;
// the next save writes the file without them.
func TestLeasesMalformedEntry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	var entries []string
	for i := range 100 {
		entries = append(entries, fmt.Sprintf(`{"issuer":"CN=A","device":"d%d","ipv4":"10.8.0.%d","last_seen":"2099-01-01T00:00:00Z"}`, i, i+2))
		switch i {
		case 10:
			entries = append(entries, `{"issuer":"CN=A","device":"bad","ipv4":"10.8.0.300","last_seen":"2099-01-01T00:00:00Z"}`)
		case 50:
			entries = append(entries, `{"issuer":"CN=A","device":7}`, `{"issuer":"CN=A","ipv4":"10.8.0.200"}`, `"text"`)
		}
	}
	writeFile(t, path, `{"version":1,"leases":[`+strings.Join(entries, ",\n")+`]}`)
	p := dualPools()
	var log bytes.Buffer
	if err := p.loadLeases(path, time.Hour, logTo(&log)); err != nil {
		t.Fatal(err)
	}
	if got := len(p.leaseEntries()); got != 100 {
		t.Fatalf("%d leases restored, want 100; log:\n%s", got, log.String())
	}
	if n := strings.Count(log.String(), "malformed lease entry dropped"); n != 4 || !strings.Contains(log.String(), "entries_dropped=4") {
		t.Fatalf("%d dropped entries logged, want 4:\n%s", n, log.String())
	}
	if m, _ := filepath.Glob(path + ".corrupt*"); len(m) != 0 {
		t.Fatalf("a file with malformed entries was kept aside: %v", m)
	}
	select {
	case <-p.dirty:
	default:
		t.Fatal("no save scheduled to write the file without the dropped entries")
	}
}

// TestLeasesTruncated: a file cut short restores the entries before the
// cut and is kept aside.
func TestLeasesTruncated(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "leases.json")
	p := dualPools()
	for i := range 10 {
		p.Acquire(fmt.Sprintf("CN=A\x00d%d", i), staticAddr{})
	}
	if err := p.saveLeases(path); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	cut := bytes.Index(b, []byte(`"d5"`)) // in the middle of the sixth entry
	writeFile(t, path, string(b[:cut]))
	q := dualPools()
	var log bytes.Buffer
	if err := q.loadLeases(path, time.Hour, logTo(&log)); err != nil {
		t.Fatal(err)
	}
	if got := len(q.leaseEntries()); got != 5 || !strings.Contains(log.String(), "entries_read=5") {
		t.Fatalf("%d leases restored from a file cut in the sixth entry, want 5:\n%s", got, log.String())
	}
}

// TestLeasesSetAsideUnique: a second damaged file in the same second is
// kept under another name; the first copy is never replaced.
func TestLeasesSetAsideUnique(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "leases.json")
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var names []string
	for i := range 3 {
		writeFile(t, path, fmt.Sprintf("damage %d", i))
		aside, err := setAside(path, now)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, aside)
	}
	for i, n := range names {
		b, err := os.ReadFile(n)
		if err != nil || string(b) != fmt.Sprintf("damage %d", i) {
			t.Fatalf("%s: %q %v (names %v)", n, b, err, names)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the damaged file is still in place: %v", err)
	}
}

// TestLeasesNotRegular: a lease_file that is a FIFO, a directory or a
// device is a config error at start and in `server check`, at once (a FIFO
// used to hang the start with no log line); nothing is renamed.
func TestLeasesNotRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fifo, dir, "/dev/zero"} {
		err := dualPools().loadLeases(path, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if !errors.Is(err, userfile.ErrNotRegular) || !strings.Contains(err.Error(), "tunnel.lease_file") {
			t.Fatalf("%s: %v", path, err)
		}
		if m, _ := filepath.Glob(path + ".corrupt*"); len(m) != 0 {
			t.Fatalf("%s was renamed: %v", path, m)
		}
	}
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	writeFile(t, h.s.config().Path, harnessTOML("")+"lease_file = \""+fifo+"\"\n"+engPolicyTOML)
	if _, err := Check(h.s.config().Path); !errors.Is(err, userfile.ErrNotRegular) {
		t.Fatalf("server check with a FIFO as lease file: %v", err)
	}
}

// TestLeasesExpire: a lease idle for longer than the TTL is dropped, at
// load and while running; a live one never is.
func TestLeasesExpire(t *testing.T) {
	p := dualPools()
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, x := range p.families() {
		x.now = func() time.Time { return clock }
	}
	a4, a6, _ := p.Acquire("CN=A\x00idle", staticAddr{})
	p.Release("CN=A\x00idle", a4, a6)
	p.Acquire("CN=A\x00live", staticAddr{})
	clock = clock.Add(48 * time.Hour)
	if n := p.expire(clock, 24*time.Hour); n != 2 { // one lease in each family
		t.Fatalf("expired %d, want idle's two", n)
	}
	if es := p.leaseEntries(); len(es) != 1 || es[0].Device != "live" {
		t.Fatalf("left %+v", es)
	}

	path := filepath.Join(t.TempDir(), "leases.json")
	old := time.Now().Add(-48 * time.Hour).UTC().Format(time.RFC3339)
	writeFile(t, path, `{"version":1,"leases":[{"issuer":"CN=A","device":"old","ipv4":"10.8.0.9","last_seen":"`+old+`"}]}`)
	q := dualPools()
	var log bytes.Buffer
	q.loadLeases(path, 24*time.Hour, logTo(&log))
	if !strings.Contains(log.String(), "expired_devices=1") || len(q.leaseEntries()) != 0 {
		t.Fatalf("stale lease kept: %s", log.String())
	}
}

// TestLeasesStaticOverride: a [[device]] address wins over a saved lease,
// both for its owner (who moves to the static address) and against the
// device that held it before (who gets a fresh one).
func TestLeasesStaticOverride(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	soon := time.Now().UTC().Format(time.RFC3339)
	writeFile(t, path, `{"version":1,"leases":[
		{"issuer":"CN=A","device":"alice","ipv4":"10.8.0.5","ipv6":"fd00:8::5","last_seen":"`+soon+`"},
		{"issuer":"CN=A","device":"bob","ipv4":"10.8.0.6","ipv6":"fd00:8::6","last_seen":"`+soon+`"}]}`)
	p := dualPools()
	p.loadLeases(path, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
	p.SetStatic([]netip.Addr{netip.MustParseAddr("10.8.0.6"), netip.MustParseAddr("fd00:8::66")})
	// bob's lease address is now alice's static one.
	a4, a6, err := p.Acquire("CN=A\x00alice", staticAddr{v4: netip.MustParseAddr("10.8.0.6")})
	if err != nil || a4.String() != "10.8.0.6" || a6.String() != "fd00:8::5" {
		t.Fatalf("alice: %v %v %v", a4, a6, err)
	}
	b4, b6, err := p.Acquire("CN=A\x00bob", staticAddr{v6: netip.MustParseAddr("fd00:8::66")})
	if err != nil || b4 == a4 || b4.String() == "10.8.0.5" || b6.String() != "fd00:8::66" {
		t.Fatalf("bob: %v %v %v", b4, b6, err)
	}
	// A static address held by a live session is not handed to another.
	if _, _, err := p.Acquire("CN=A\x00mallory", staticAddr{v4: a4}); err == nil {
		t.Fatal("live static address handed to another device")
	}
	// And a failure in one family holds nothing in the other.
	if es := p.leaseEntries(); len(es) != 2 {
		t.Fatalf("leases after a failed acquire: %+v", es)
	}
}

// TestAddrPoolV6: an IPv6 pool hands out from ::2, never the subnet-router
// anycast, gateway or last address, and a /120 runs out like an IPv4 pool.
func TestAddrPoolV6(t *testing.T) {
	p := newAddrPool(netip.MustParsePrefix("fd00:8::/120"))
	if p.Gateway().String() != "fd00:8::1/120" || p.last.String() != "fd00:8::ff" {
		t.Fatalf("gateway %v last %v", p.Gateway(), p.last)
	}
	seen := map[netip.Addr]bool{}
	for i := 0; ; i++ {
		a, err := p.Acquire(string(rune('a'+i)), netip.Addr{})
		if errors.Is(err, errPoolExhausted) {
			break
		}
		if err != nil || seen[a] || !p.usable(a) {
			t.Fatalf("#%d: %v %v", i, a, err)
		}
		seen[a] = true
	}
	if len(seen) != 253 {
		t.Fatalf("%d addresses from a /120, want 253", len(seen))
	}
	big := newAddrPool(netip.MustParsePrefix("fd00:8::/64"))
	if a, err := big.Acquire("x", netip.Addr{}); err != nil || a.String() != "fd00:8::2" {
		t.Fatalf("/64: %v %v", a, err)
	}
}

// FuzzLoadLeases: whatever is in the lease file, loading it never panics,
// only restores usable addresses of the pools, at most one per device and
// address, and leaves the pools able to hand out addresses and save.
func FuzzLoadLeases(f *testing.F) {
	f.Add([]byte(`{"version":1,"leases":[{"issuer":"CN=A","device":"a","ipv4":"10.8.0.5","ipv6":"fd00:8::5","last_seen":"2099-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":1,"leases":[{"issuer":"CN=A","device":"a","ipv4":"10.8.0.5","last_seen":"2099-01-01T00:00:00Z"},{"issuer":"CN=A","device":"a","ipv4":"10.8.0.6","last_seen":"2099-01-01T00:00:00Z"}]}`))
	f.Add([]byte(`{"version":1,"leases":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, in []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "leases.json")
		if err := os.WriteFile(path, in, 0o600); err != nil {
			t.Fatal(err)
		}
		p := dualPools()
		p.loadLeases(path, time.Hour, slog.New(slog.NewTextHandler(io.Discard, nil)))
		seen := map[netip.Addr]bool{}
		for _, e := range p.leaseEntries() {
			for _, a := range []netip.Addr{e.IPv4, e.IPv6} {
				if !a.IsValid() {
					continue
				}
				if seen[a] || !(p.v4.usable(a) || p.v6.usable(a)) {
					t.Fatalf("restored %v for %q twice or outside the pools", a, e.Device)
				}
				seen[a] = true
			}
		}
		if _, _, err := p.Acquire("CN=Z\x00new", staticAddr{}); err != nil {
			t.Fatalf("acquire after load: %v", err)
		}
		if err := p.saveLeases(path); err != nil {
			t.Fatal(err)
		}
	})
}

// TestLeasesSaveIsAtomic: a save replaces the lease file whole; a reader
// (or a gateway starting after a crash) that holds the previous file reads
// the previous leases complete, never a truncated or half-written one.
// Writing the file in place (os.WriteFile) fails this test.
func TestLeasesSaveIsAtomic(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases.json")
	p := dualPools()
	if _, _, err := p.Acquire("CN=A\x00alice", staticAddr{}); err != nil {
		t.Fatal(err)
	}
	if err := p.saveLeases(path); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if _, _, err := p.Acquire("CN=A\x00bob", staticAddr{}); err != nil {
		t.Fatal(err)
	}
	if err := p.saveLeases(path); err != nil {
		t.Fatal(err)
	}
	held, err := io.ReadAll(old)
	if err != nil || !bytes.Equal(held, before) {
		t.Fatalf("the previous lease file changed under its reader (%v):\n%s", err, held)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Contains(after, []byte("bob")) || !bytes.Contains(after, []byte("alice")) {
		t.Fatalf("new lease file lacks a device:\n%s", after)
	}
}

// FuzzParseLeases: the entry-by-entry reader never panics, keeps only
// entries that name a device, and never both drops and keeps one entry.
func FuzzParseLeases(f *testing.F) {
	f.Add([]byte(`{"version":1,"leases":[{"issuer":"CN=A","device":"a","ipv4":"10.8.0.5","last_seen":"2099-01-01T00:00:00Z"},{"issuer":"CN=A","device":7}]}`))
	f.Add([]byte(`{"leases":[{"issuer":"CN=A","device":"a"}],"version":1}`))
	f.Add([]byte(`{"version":1,"leases":[{"issuer":"CN=A","device":"a"},`))
	f.Fuzz(func(t *testing.T, in []byte) {
		rd := parseLeases(in)
		for _, e := range rd.entries {
			if e.check() != nil {
				t.Fatalf("kept an entry that names no device: %+v", e)
			}
		}
		if rd.damage == nil && len(rd.entries)+len(rd.dropped) > 0 && !bytes.Contains(in, []byte(`"version"`)) {
			t.Fatal("a file without a version was read as undamaged")
		}
	})
}
