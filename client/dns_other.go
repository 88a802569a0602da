//go:build !linux

package client

import (
	"errors"
	"fmt"
	"net/netip"
)

func setDNS(string, string, []netip.Addr, []string) (string, error) {
	return "", fmt.Errorf("pushed DNS: %w on this platform", errors.ErrUnsupported)
}

func revertDNS(string, string) error { return nil }

func recoverDNS(string, string) (int, error) { return 0, nil }
