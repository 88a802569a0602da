package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stderrOf returns what f writes to os.Stderr.
func stderrOf(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	defer func() { os.Stderr = old }()
	f()
	w.Close()
	b, _ := io.ReadAll(r)
	return string(b)
}

// TestStartProfile: SALLYPORT_CPUPROFILE=FILE leaves a CPU profile of the
// run in FILE (make bench reads it); unset, or a file that cannot be made,
// changes nothing about the run.
func TestStartProfile(t *testing.T) {
	if msg := stderrOf(t, func() { startProfile("")() }); msg != "" { // no profile: a silent no-op
		t.Errorf("without SALLYPORT_CPUPROFILE: %q on stderr", msg)
	}

	path := filepath.Join(t.TempDir(), "cpu.pprof")
	stop := startProfile(path)
	for i := 0; i < 1e6; i++ {
		_ = filepath.Base(path)
	}
	stop()
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b { // pprof files are gzipped protobuf
		t.Fatalf("profile %s: %d bytes, %v", path, len(b), err)
	}

	bad := filepath.Join(t.TempDir(), "no", "such", "dir", "cpu.pprof")
	if msg := stderrOf(t, func() { startProfile(bad)() }); !strings.Contains(msg, "sallyport: SALLYPORT_CPUPROFILE:") || !strings.Contains(msg, "cpu.pprof") {
		t.Errorf("unusable profile path: stderr %q", msg)
	}
	if _, err := os.Stat(bad); err == nil {
		t.Error("a profile appeared where none could be made")
	}
	// A second profile while one runs is refused by the runtime, and the
	// run goes on.
	stop = startProfile(path)
	startProfile(filepath.Join(t.TempDir(), "second.pprof"))()
	stop()
}
