//go:build !linux

package server

import (
	"errors"

	"github.com/sallyport/sallyport/internal/sdunit"
)

var errCheckAsUnsupported = errors.New("checking files as another user is supported on Linux only")

func lookupUser(string, *sdunit.Unit) (*RunAs, error) { return nil, errCheckAsUnsupported }

// CheckFilesAs is Linux only (the gateway runs on Linux).
func CheckFilesAs(*Config, *RunAs, string) error { return errCheckAsUnsupported }
