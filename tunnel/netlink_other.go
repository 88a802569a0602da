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

// ReplaceRoute is only supported on Linux.
func ReplaceRoute(name string, dst netip.Prefix) error {
	return errNetlink("replace route via " + name)
}

// DeleteRoute is only supported on Linux.
func DeleteRoute(name string, dst netip.Prefix) error { return errNetlink("delete route via " + name) }

// LinkRoutes is only supported on Linux.
func LinkRoutes(name string) ([]netip.Prefix, error) {
	return nil, errNetlink("list routes of " + name)
}
