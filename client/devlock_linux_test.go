package client

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/adminsock"
	"github.com/sallyport/sallyport/pki"
)

// The device lock: the first holder gets it; a second is told who holds
// it (profile, pid, the command that stops it); a lock file left by a
// holder that is gone (its flock went with it) blocks nobody; Release
// removes the file. The lock is named after the device as the gateway
// knows it: a renewed certificate of the device (another issuer, the same
// enrollment lineage) shares it, another device does not.
func TestDeviceLock(t *testing.T) {
	t.Setenv("CONFIGURATION_DIRECTORY", "/etc/sallyport")
	dir := filepath.Join(t.TempDir(), "run")
	id := pki.Identity{Device: "alice-laptop", Issuer: "CN=Device CA"}
	path := deviceLockFile(dir, id)
	renewed := pki.Identity{Device: "alice-laptop", Issuer: "CN=Online Issuer", LineageIssuer: "CN=Device CA"}
	if deviceLockFile(dir, renewed) != path {
		t.Error("a renewed certificate of the device has another lock")
	}
	if deviceLockFile(dir, pki.Identity{Device: "bob-laptop", Issuer: "CN=Device CA"}) == path ||
		deviceLockFile(dir, pki.Identity{Device: "alice-laptop", Issuer: "CN=Other CA"}) == path {
		t.Error("another device shares the lock")
	}
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	first := lockOwner{PID: os.Getpid(), Profile: "acme", Config: "/etc/sallyport/acme.toml", Device: "alice-laptop", Since: since}
	l, err := lockDevice(path, "alice-laptop", first)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lock file: %v %v", fi, err)
	}
	_, err = lockDevice(path, "alice-laptop", lockOwner{PID: 1, Profile: "acme-copy"})
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.Owner.Profile != "acme" {
		t.Fatalf("second holder: %v", err)
	}
	for _, want := range []string{"device alice-laptop is already up on this laptop", "profile acme", "pid " + itoa(int32(os.Getpid())),
		"(sudo sallyport down acme)", "replacing each other at the gateway"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	// A file outside the profiles is named as the file it was brought up from.
	elsewhere := &InUseError{Device: "alice-laptop", Owner: lockOwner{PID: 1, Profile: "acme", Config: "/home/alice/acme.toml"}}
	if !strings.Contains(elsewhere.Error(), "(sudo sallyport down -c /home/alice/acme.toml)") {
		t.Errorf("message %q does not name the file", elsewhere)
	}
	l.Release()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lock file left after Release: %v", err)
	}
	// A file whose holder is gone (kill -9: the kernel dropped its flock).
	if err := os.WriteFile(path, []byte(`{"pid": 999999, "profile": "crashed"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err = lockDevice(path, "alice-laptop", first)
	if err != nil {
		t.Fatalf("a crashed holder's file blocks the next up: %v", err)
	}
	if o := readOwner(path); o.Profile != "acme" || o.PID != os.Getpid() {
		t.Errorf("the new holder's note: %+v", o)
	}
	l.Release()
	// The runtime directory it made is sallyport's own (marked), so an
	// admin socket made in it next may give it to the admin group.
	if _, err := os.Lstat(filepath.Join(dir, ".sallyport-admin-dir")); err != nil {
		t.Errorf("the runtime directory the lock made is not marked: %v", err)
	}
}

// What someone else could plant instead of the lock: a symlink (the
// holder would truncate its target), a file of another user's (they
// could hold the lock and keep the device down), a runtime directory
// anyone may write. Each is refused with nothing written.
func TestDeviceLockPlanted(t *testing.T) {
	owner := lockOwner{PID: os.Getpid(), Profile: "acme"}
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "device-x.lock")
	victim := filepath.Join(t.TempDir(), "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, path); err != nil {
		t.Fatal(err)
	}
	if _, err := lockDevice(path, "alice", owner); err == nil {
		t.Error("a symlink was taken as the lock")
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Errorf("the symlink's target was written: %q", b)
	}
	os.Remove(path)
	if os.Geteuid() == 0 {
		if err := os.WriteFile(path, []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if _, err := lockDevice(path, "alice", owner); err == nil || !strings.Contains(err.Error(), "not a regular file of uid 0") {
			t.Errorf("another user's lock file: %v", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "{}" {
			t.Errorf("another user's lock file was written: %q", b)
		}
	}
	open := filepath.Join(t.TempDir(), "tmp")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	_, err := lockDevice(filepath.Join(open, "device-x.lock"), "alice", owner)
	var unsafe *adminsock.UnsafeDirError
	if !errors.As(err, &unsafe) || !strings.Contains(err.Error(), "writable by everyone") {
		t.Errorf("a runtime directory anyone may write: %v", err)
	}
}

// A second client with the same device certificate stops at Run's first
// step, with the lock's message, before it opens a TUN or dials; the
// first keeps its session.
func TestSecondClientSameDevice(t *testing.T) {
	noLeaks(t)
	e := startClient(t, envOpt{})
	e.up(testConfig())
	e.status("connected", func(st Status) bool { return st.Connected })
	cfg := *e.c.cfg
	cfg.Path = "/etc/sallyport/acme-copy.toml"
	cfg.Admin.Socket = filepath.Join(t.TempDir(), "copy.sock")
	c2, err := New(&cfg, testLogger(&syncBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{dev: newFakeTUN(false)}
	c2.sys = r
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	err = c2.Run(ctx, nil)
	var inUse *InUseError
	if !errors.As(err, &inUse) || inUse.Owner.PID != os.Getpid() {
		t.Fatalf("second client: %v", err)
	}
	if len(r.log()) != 0 {
		t.Fatalf("the second client changed the laptop: %q", r.log())
	}
	if _, err := os.Stat(cfg.Admin.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the second client made its admin socket: %v", err)
	}
	select {
	case extra := <-e.gw.conns:
		extra.tls.Close()
		t.Fatal("the second client dialled the gateway")
	default:
	}
	if st := e.c.Status(); !st.Connected {
		t.Fatal("the first client lost its session")
	}
}

// Many would-be holders taking and releasing one device lock at once:
// never two at a time (Release removes the file while it holds the lock,
// so one that opened the old file must notice and try again).
func TestDeviceLockExclusive(t *testing.T) {
	path := filepath.Join(t.TempDir(), "device-x.lock")
	var holders, most atomic.Int32
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				l, err := lockDevice(path, "x", lockOwner{PID: g + 1})
				if err != nil {
					continue
				}
				if n := holders.Add(1); n > most.Load() {
					most.Store(n)
				}
				runtime.Gosched() // hold it a moment
				holders.Add(-1)
				l.Release()
			}
		}()
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Fatalf("%d holders of one device lock at once", most.Load())
	}
}
