//go:build !linux

package tunnel

import (
	"errors"
	"fmt"
	"net/netip"
)

func errNetlink(op string) error {
	return fmt.Errorf("%s: netlink is only available on linux: %w", op, errors.ErrUnsupported)
}

// LinkUp is only supported on Linux.
func LinkUp(name string, mtu int) error { return errNetlink("link up " + name) }

// SetAddress is only supported on Linux.
func SetAddress(name string, p netip.Prefix) error { return errNetlink("set address on " + name) }
