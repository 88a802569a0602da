//go:build !linux

package server

import (
	"errors"
	"fmt"
	"net/netip"
)

// installNAT is only supported on Linux (nftables).
func installNAT(s natSpec) error {
	return fmt.Errorf("tunnel.masquerade: NAT needs Linux nftables: %w", errors.ErrUnsupported)
}

// removeNAT has nothing to remove off Linux.
func removeNAT(table string) error { return nil }

// autoInterfaces is only supported on Linux.
func autoInterfaces(routes []netip.Prefix, tun string) ([]string, error) {
	return nil, fmt.Errorf("route lookup needs Linux netlink: %w", errors.ErrUnsupported)
}
