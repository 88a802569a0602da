// Package userfile reads the files whose path an admin or a user gives
// (configs, certificates, keys, CRLs, policy test tables, the lease file):
// only a regular file is read, never more than a cap, and opening one never
// blocks. A path naming /dev/zero, a FIFO, a socket or a directory gets one
// clear error instead of a process that grows without bound or hangs.
//
// It imports nothing of sallyport's, so every package may use it (pki
// included).
package userfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// Caps for the kinds of file sallyport reads. They are far above any real
// file of the kind and far below what would hurt the process.
const (
	// MaxConfig bounds server.toml, client.toml and policy CASES files
	// (10,000 [[device]] tables are about 1 MiB).
	MaxConfig = 8 << 20
	// MaxPEM bounds certificate, key and CRL files (a CRL of 100,000
	// revoked devices is about 4 MiB).
	MaxPEM = 16 << 20
)

// ErrNotRegular is wrapped by the error for a path that is not a regular
// file (a device, FIFO, socket or directory).
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is wrapped by the error for a file over its cap.
var ErrTooLarge = errors.New("file too large")

// Read returns the contents of the regular file at path, or an error when
// it is missing, not a regular file, or larger than limit bytes. Errors are
// *fs.PathError (they name the path; a missing file's wraps
// fs.ErrNotExist).
func Read(path string, limit int64) ([]byte, error) {
	f, err := Open(path, limit)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: path, Err: err}
	}
	if int64(len(b)) > limit {
		return nil, tooLarge(path, limit) // it grew while we read it
	}
	return b, nil
}

// Open opens the regular file at path for reading if it is at most limit
// bytes long. It opens without blocking (a FIFO with no writer would
// otherwise hang the open) and checks the file it opened, not the name, so
// a file swapped after a check cannot slip through. The caller still reads
// through a limit: a file may grow after Open.
func Open(path string, limit int64) (*os.File, error) {
	// The name first, for a clear error where open(2) itself would fail
	// obscurely (a unix socket: "no such device or address").
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err // *fs.PathError names the path and wraps the cause
	}
	if err := check(path, fi, limit); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|openFlags, 0)
	if err != nil {
		return nil, err
	}
	if fi, err = f.Stat(); err != nil {
		f.Close()
		return nil, err
	}
	if err := check(path, fi, limit); err != nil {
		f.Close()
		return nil, err
	}
	if err := clearNonblock(f); err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return f, nil
}

// Check reports whether path, if it exists, is a regular file no larger
// than limit, without opening it (for files read later, like the lease
// file at start). A missing file is not an error.
func Check(path string, limit int64) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return check(path, fi, limit)
}

// check is the rule on what a path names.
func check(path string, fi fs.FileInfo, limit int64) error {
	if !fi.Mode().IsRegular() {
		return &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w (%s)", ErrNotRegular, kind(fi.Mode()))}
	}
	if fi.Size() > limit {
		return tooLarge(path, limit)
	}
	return nil
}

func tooLarge(path string, limit int64) error {
	return &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("%w (more than %s)", ErrTooLarge, size(limit))}
}

// Cause is err without the operation and path of an *fs.PathError, for a
// caller whose own message names the file already ("config /x: not a
// regular file (a FIFO)" rather than "config /x: read /x: ...").
func Cause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// kind names a file type in words an admin knows.
func kind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	}
	return "type " + m.Type().String()
}

func size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
