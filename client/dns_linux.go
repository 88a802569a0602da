package client

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
)

// resolvedSocket exists while systemd-resolved runs.
const resolvedSocket = "/run/systemd/resolve/io.systemd.Resolve"

var errNoResolved = errors.New("systemd-resolved is not running on this machine")

// setDNS gives the TUN link its resolvers and routing domains through
// systemd-resolved (resolvectl), so only the pushed domains go to the
// tunnel's resolvers.
func setDNS(dev string, servers []netip.Addr, domains []string) error {
	if _, err := os.Stat(resolvedSocket); err != nil {
		return errNoResolved
	}
	if len(servers) > 0 {
		args := []string{"dns", dev}
		for _, s := range servers {
			args = append(args, s.String())
		}
		if err := resolvectl(args...); err != nil {
			return err
		}
	}
	if len(domains) > 0 {
		args := []string{"domain", dev}
		for _, d := range domains {
			args = append(args, "~"+strings.TrimPrefix(d, "~"))
		}
		return resolvectl(args...)
	}
	return nil
}

func revertDNS(dev string) error {
	if _, err := os.Stat(resolvedSocket); err != nil {
		return nil
	}
	return resolvectl("revert", dev)
}

func resolvectl(args ...string) error {
	out, err := exec.Command("resolvectl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("resolvectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
