//go:build !linux

package ca

import (
	"errors"
	"fmt"
)

// lockFile is only implemented on Linux (flock(2)); elsewhere the PKI refuses
// to run rather than risk a corrupt index.
func lockFile(path string, exclusive bool) (func(), error) {
	return nil, fmt.Errorf("lock %s: file locking: %w", path, errors.ErrUnsupported)
}
