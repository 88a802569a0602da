package userfile

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRead: only a regular file within the cap is read; everything else
// gets one error naming the path and the kind of file, at once.
func TestRead(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	if err := os.WriteFile(small, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	link := filepath.Join(dir, "link")
	if err := os.Symlink(small, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path string
		limit      int64
		want       error  // nil: read
		words      string // in the message
	}{
		{"regular file", small, 10, nil, ""},
		{"symlink to a regular file", link, 10, nil, ""},
		{"one byte over the cap", small, 9, ErrTooLarge, "more than 9 bytes"},
		{"/dev/zero", "/dev/zero", MaxConfig, ErrNotRegular, "character device"},
		{"FIFO without a writer", fifo, MaxConfig, ErrNotRegular, "FIFO"},
		{"directory", dir, MaxConfig, ErrNotRegular, "directory"},
		{"unix socket", sock, MaxConfig, ErrNotRegular, ""},
		{"missing", filepath.Join(dir, "nope"), MaxConfig, fs.ErrNotExist, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			type result struct {
				b   []byte
				err error
			}
			done := make(chan result, 1)
			go func() { b, err := Read(tc.path, tc.limit); done <- result{b, err} }()
			var r result
			select {
			case r = <-done:
			case <-time.After(time.Minute):
				t.Fatalf("Read(%s) hung", tc.path)
			}
			if tc.want == nil {
				if r.err != nil || string(r.b) != "0123456789" {
					t.Fatalf("Read: %q, %v", r.b, r.err)
				}
				return
			}
			if !errors.Is(r.err, tc.want) {
				t.Fatalf("Read: %v, want %v", r.err, tc.want)
			}
			if !strings.Contains(r.err.Error(), tc.path) || !strings.Contains(r.err.Error(), tc.words) {
				t.Fatalf("error %q does not name %s and %q", r.err, tc.path, tc.words)
			}
		})
	}
}

// TestCheck: the same rule without reading; a missing file is fine.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	if err := Check(filepath.Join(dir, "nope"), 1); err != nil {
		t.Fatalf("missing file: %v", err)
	}
	if err := Check(dir, 1); !errors.Is(err, ErrNotRegular) {
		t.Fatalf("directory: %v", err)
	}
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, []byte("12"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Check(f, 1); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over the cap: %v", err)
	}
	if err := Check(f, 2); err != nil {
		t.Fatalf("at the cap: %v", err)
	}
}

func TestCause(t *testing.T) {
	_, err := Read("/dev/zero", 1)
	if got := Cause(err).Error(); got != "not a regular file (a character device)" {
		t.Fatalf("Cause: %q", got)
	}
	if !errors.Is(Cause(err), ErrNotRegular) {
		t.Fatal("Cause lost the sentinel")
	}
}
