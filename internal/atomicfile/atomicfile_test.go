package atomicfile

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestWriteReplacesWhole: the new content arrives under a new inode, so a
// reader that opened the old file keeps reading the old content whole
// (a write in place, truncate then write, fails this); the mode is the
// one asked for; nothing is left beside the file.
func TestWriteReplacesWhole(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "leases.json")
	if err := Write(p, []byte("old content"), 0o640); err != nil {
		t.Fatal(err)
	}
	old, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := Write(p, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(old)
	if err != nil || string(b) != "old content" {
		t.Fatalf("a reader of the old file saw %q (%v): the file was rewritten in place", b, err)
	}
	b, err = os.ReadFile(p)
	if err != nil || string(b) != "new" {
		t.Fatalf("new content %q, %v", b, err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries, want only the file", len(ents))
	}
}

// TestWriteFailureKeepsOld: a write that cannot complete (the path is a
// directory, so the rename fails) leaves the target as it was and no
// temporary file behind; a missing directory is an error, not a panic.
func TestWriteFailureKeepsOld(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "sub")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(target, []byte("data"), 0o644); err == nil {
		t.Fatal("Write over a non-empty directory succeeded")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || !ents[0].IsDir() {
		t.Fatalf("directory holds %v after a failed write", ents)
	}
	if err := Write(filepath.Join(dir, "no", "such"), nil, 0o600); err == nil {
		t.Fatal("Write into a missing directory succeeded")
	}
}
