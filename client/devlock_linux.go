package client

// The device lock (devlock.go) as an flock on a file in the runtime
// directory.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/sallyport/sallyport/internal/adminsock"
)

// deviceLock is a held device lock; Release drops it.
type deviceLock struct {
	f    *os.File
	path string
}

// lockDevice takes the lock at path for owner, or returns an InUseError
// naming whoever holds it.
//
// The runtime directory follows the admin socket's rules (made 0700 and
// marked as sallyport's, refused when someone else could change it), and
// the lock file must be a regular file of this user's, opened without
// following a symlink: a lock someone else could plant or hold would let
// them keep the device down, or have the holder truncate another file.
func lockDevice(path, device string, owner lockOwner) (*deviceLock, error) {
	if _, err := adminsock.PrepareDir(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("device lock: %w", err)
	}
	for range 10 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return nil, fmt.Errorf("device lock %s: %w", path, err)
		}
		var held unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &held); err != nil || held.Mode&unix.S_IFMT != unix.S_IFREG || held.Uid != uint32(os.Geteuid()) {
			f.Close()
			return nil, fmt.Errorf("device lock %s: not a regular file of uid %d (%v); remove it", path, os.Geteuid(), err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, &InUseError{Device: device, Owner: readOwner(path), Lock: path}
			}
			return nil, fmt.Errorf("device lock %s: %w", path, err)
		}
		// The holder before us may have removed the file between our open
		// and our lock: then we hold a lock nobody else can see; again.
		var now unix.Stat_t
		if unix.Stat(path, &now) != nil || held.Ino != now.Ino || held.Dev != now.Dev {
			f.Close()
			continue
		}
		b, _ := json.Marshal(owner)
		if err := f.Truncate(0); err == nil {
			_, _ = f.WriteAt(append(b, '\n'), 0)
		}
		return &deviceLock{f: f, path: path}, nil
	}
	return nil, fmt.Errorf("device lock %s: keeps changing under us", path)
}

// Release removes the lock file (while still holding the lock, so nobody
// can take the old one in between) and drops the lock.
func (l *deviceLock) Release() {
	_ = os.Remove(l.path)
	l.f.Close()
}
