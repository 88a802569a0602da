//go:build unix

package userfile

import (
	"os"
	"syscall"
)

// openFlags opens without blocking: open(2) of a FIFO waits for a writer
// unless O_NONBLOCK is given.
const openFlags = syscall.O_NONBLOCK

// clearNonblock puts a regular file back in blocking mode (O_NONBLOCK has
// no effect on regular files on Linux, but other systems may differ).
func clearNonblock(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.SetNonblock(int(fd), false) }); err != nil {
		return err
	}
	return serr
}
