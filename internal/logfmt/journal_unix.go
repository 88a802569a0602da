//go:build unix

package logfmt

import (
	"fmt"
	"os"
	"syscall"
)

// toJournal reports whether f is the stream systemd connected to the
// journal: JOURNAL_STREAM is "DEVICE:INODE" of that stream (systemd.exec(5)),
// so a child whose stderr was redirected elsewhere keeps its timestamps.
func toJournal(f *os.File, env string) bool {
	if env == "" {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return false
	}
	return env == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}
