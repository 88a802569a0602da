//go:build unix

package pki

import (
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// fileGroup names the group owning fi ("" when unknown).
func fileGroup(fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	g, err := user.LookupGroupId(strconv.FormatUint(uint64(st.Gid), 10))
	if err != nil {
		return ""
	}
	return g.Name
}
