//go:build !linux

package client

import (
	"errors"
	"fmt"
)

type deviceLock struct{}

func lockDevice(path, device string, owner lockOwner) (*deviceLock, error) {
	return nil, fmt.Errorf("device lock: %w on this platform", errors.ErrUnsupported)
}

// Release is a no-op here.
func (*deviceLock) Release() {}
