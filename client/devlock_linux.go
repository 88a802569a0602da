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
)

// deviceLock is a held device lock; Release drops it.
type deviceLock struct {
	f    *os.File
	path string
}

// lockDevice takes the lock at path for owner, or returns an InUseError
// naming whoever holds it.
func lockDevice(path, device string, owner lockOwner) (*deviceLock, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("device lock: %w", err)
	}
	for range 10 {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return nil, fmt.Errorf("device lock %s: %w", path, err)
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
		var held, now unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) != nil || unix.Stat(path, &now) != nil || held.Ino != now.Ino || held.Dev != now.Dev {
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
