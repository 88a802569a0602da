//go:build !linux

package policyroute

import (
	"errors"
	"fmt"
	"net/netip"
)

func errNetlink(op string) error {
	return fmt.Errorf("%s: netlink is only available on linux: %w", op, errors.ErrUnsupported)
}

// ReplaceTableRoute is only supported on Linux.
func ReplaceTableRoute(r TableRoute) error { return errNetlink("replace route " + r.String()) }

// DeleteTableRoute is only supported on Linux.
func DeleteTableRoute(r TableRoute) error { return errNetlink("delete route " + r.String()) }

// TableRoutes is only supported on Linux.
func TableRoutes(table int) ([]TableRoute, error) { return nil, errNetlink("list routes") }

// AddRule is only supported on Linux.
func AddRule(r Rule) error { return errNetlink("add rule " + r.String()) }

// DeleteRule is only supported on Linux.
func DeleteRule(r Rule) error { return errNetlink("delete rule " + r.String()) }

// Rules is only supported on Linux.
func Rules(table int) ([]Rule, error) { return nil, errNetlink("list rules") }

// ConnectedPrefixes is only supported on Linux.
func ConnectedPrefixes(except string) ([]netip.Prefix, error) {
	return nil, errNetlink("list connected networks")
}

// RemoveAddress is only supported on Linux.
func RemoveAddress(name string, p netip.Prefix) error {
	return errNetlink("remove address from " + name)
}
