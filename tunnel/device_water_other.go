//go:build !linux

package tunnel

import (
	"errors"
	"fmt"
)

func openWater(name string, mtu int) (Device, error) {
	return nil, fmt.Errorf("water driver: only supported on linux: %w", errors.ErrUnsupported)
}
