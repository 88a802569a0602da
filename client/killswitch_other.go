//go:build !linux

package client

import (
	"errors"
	"fmt"
)

func errKill(op string) error {
	return fmt.Errorf("kill switch: %s: nftables is only available on linux: %w", op, errors.ErrUnsupported)
}

func installKillSwitch(s killSpec) error          { return errKill("install " + s.Table) }
func removeKillSwitch(table string) error         { return nil }
func killSwitchExists(table string) (bool, error) { return false, nil }
