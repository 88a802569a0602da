//go:build linux

package ca

import (
	"os"
	"syscall"
)

// fileGID is the group owning fi.
func fileGID(fi os.FileInfo) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Gid, true
}
