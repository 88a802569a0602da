//go:build !unix

package pki

import "os"

// fileGroup names the group owning fi: no groups here, so group-shared keys
// are never accepted.
func fileGroup(os.FileInfo) string { return "" }
