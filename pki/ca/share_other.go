//go:build !linux

package ca

import "os"

// fileGID: sharing a PKI with the gateway's group is Linux only; elsewhere
// every PKI is private (owner-only).
func fileGID(os.FileInfo) (uint32, bool) { return 0, false }
