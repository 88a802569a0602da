//go:build !linux

package client

import (
	"errors"
	"fmt"
	"net/netip"
)

func setDNS(string, []netip.Addr, []string) (string, error) {
	return "", fmt.Errorf("pushed DNS: %w on this platform", errors.ErrUnsupported)
}

func revertDNS(string) error { return nil }

func recoverDNS(string) {}
