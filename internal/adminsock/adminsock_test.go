package adminsock

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "a.sock")
	before := runtime.NumGoroutine()
	s, err := Listen(path, func(ctx context.Context, r Request) (any, error) {
		switch r.Cmd {
		case "echo":
			return map[string]string{"device": r.Device}, nil
		default:
			return nil, errors.New("unknown command " + r.Cmd)
		}
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v %v", fi, err)
	}
	if _, err := Listen(path, nil, nil); err == nil || !strings.Contains(err.Error(), "another") {
		t.Fatalf("second listener on live socket: %v", err)
	}
	var out map[string]string
	if err := Call(path, Request{Cmd: "echo", Device: "alice"}, &out); err != nil || out["device"] != "alice" {
		t.Fatalf("echo: %v %v", out, err)
	}
	if err := Call(path, Request{Cmd: "nope"}, nil); err == nil || !strings.Contains(err.Error(), "unknown command nope") {
		t.Fatalf("unknown: %v", err)
	}
	s.Close()
	s.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("socket left behind: %v", err)
	}
	if err := Call(path, Request{Cmd: "echo"}, nil); err == nil || !strings.Contains(err.Error(), "is sallyport running") {
		t.Fatalf("call to missing socket: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("goroutines leaked: %d > %d", n, before)
	}
}

// TestSlowHandler: a handler may take longer than the read/write timeout
// (a CPU profile records for seconds); the reply still goes out, and a
// caller with a short deadline gives up instead of waiting.
func TestSlowHandler(t *testing.T) {
	old := ioTimeout
	ioTimeout = 50 * time.Millisecond
	t.Cleanup(func() { ioTimeout = old })
	path := filepath.Join(t.TempDir(), "a.sock")
	release, never := make(chan struct{}), make(chan struct{})
	defer close(never)
	s, err := Listen(path, func(ctx context.Context, r Request) (any, error) {
		wait := release
		if r.Kind != "cpu" {
			wait = never
		}
		select {
		case <-wait:
		case <-ctx.Done():
		}
		return map[string]any{"kind": r.Kind, "seconds": r.Seconds}, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	done := make(chan error, 1)
	var out struct {
		Kind    string
		Seconds int
	}
	go func() {
		done <- CallTimeout(path, Request{Cmd: "pprof", Kind: "cpu", Seconds: 3}, &out, 10*time.Second)
	}()
	time.Sleep(3 * ioTimeout) // past the server's read deadline
	close(release)
	if err := <-done; err != nil || out.Kind != "cpu" || out.Seconds != 3 {
		t.Fatalf("slow reply: %+v %v", out, err)
	}
	// A caller whose deadline passes first gets an error, not a hang.
	if err := CallTimeout(path, Request{Cmd: "pprof"}, nil, 100*time.Millisecond); err == nil {
		t.Fatal("call past its deadline succeeded")
	}
}

// A socket whose directory this user may not create or write is reported
// as a DirError naming the directory and the fix (not a TCP port hint);
// other errors keep their text.
func TestDirError(t *testing.T) {
	sock := "/run/sallyport/client-acme.sock"
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"bind", &net.OpError{Op: "listen", Net: "unix", Err: &os.SyscallError{Syscall: "bind", Err: syscall.EACCES}},
			"admin socket /run/sallyport/client-acme.sock: directory /run/sallyport is not writable by uid"},
		{"mkdir", &fs.PathError{Op: "mkdir", Path: "/run/sallyport", Err: syscall.EACCES}, "may not create directory /run/sallyport (permission denied)"},
		{"other", &net.OpError{Op: "listen", Net: "unix", Err: syscall.EADDRINUSE}, "admin socket /run/sallyport/client-acme.sock: listen unix"},
	} {
		err := dirError(sock, tt.err)
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %q, want %q", tt.name, err, tt.want)
		}
		var de *DirError
		isDir := errors.As(err, &de)
		switch {
		case isDir != errors.Is(tt.err, os.ErrPermission):
			t.Errorf("%s: %#v: want a DirError exactly for a permission error", tt.name, err)
		case !isDir && !errors.Is(err, tt.err):
			t.Errorf("%s: %q does not wrap %v", tt.name, err, tt.err)
		case isDir && (!strings.Contains(err.Error(), "[admin] socket") || !errors.Is(err, syscall.EACCES)):
			t.Errorf("%s: %q does not say how to fix it or does not wrap EACCES", tt.name, err)
		}
	}
}
