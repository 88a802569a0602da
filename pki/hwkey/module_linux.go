package hwkey

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// CheckModule refuses a PKCS#11 module that anyone but root (or this
// process's own user) could replace: the library is loaded into the client,
// which runs as root, so a module in a user's home or a world-writable
// directory is a way to root. The module file and every directory above
// it, along the path as given and along the path its symbolic links lead
// to, must belong to root or to this user, and none may be writable by
// others (group-writable only for group root). A world-writable directory
// with the sticky bit (/tmp) is allowed above the module: there, nobody
// can rename or remove what root owns.
func CheckModule(path string) error {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return fmt.Errorf("PKCS#11 module %q: give a clean absolute path", path)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return fmt.Errorf("PKCS#11 module %s: %w", path, err)
	}
	fi, err := os.Stat(real)
	if err != nil {
		return fmt.Errorf("PKCS#11 module %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("PKCS#11 module %s is not a regular file", path)
	}
	return checkOwners("PKCS#11 module "+path, path, real, true, "replace the library this client", "install the module as root")
}

// checkOwners walks path and real (where path's links lead), each up to
// "/", and refuses the first entry that belongs to neither root nor this
// process's user, or (directories always; the end itself when leafMode is
// set) that others may write: group-writable only for group root, a
// sticky world-writable directory above the end allowed. what names the
// object in the error; harm says what its owner could do ("replace the
// library this client"), fix what the admin should do instead.
func checkOwners(what, path, real string, leafMode bool, harm, fix string) error {
	euid := os.Geteuid()
	for _, p := range []string{path, real} {
		for q := p; ; q = filepath.Dir(q) {
			fi, err := os.Lstat(q)
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			st, ok := fi.Sys().(*syscall.Stat_t)
			if !ok {
				return fmt.Errorf("%s: cannot tell who owns %s", what, q)
			}
			if st.Uid != 0 && int(st.Uid) != euid {
				return fmt.Errorf("%s: %s belongs to uid %d, who could %s (uid %d) uses; %s", what, q, st.Uid, harm, euid, fix)
			}
			m := fi.Mode()
			sticky := m.IsDir() && m&fs.ModeSticky != 0 && q != p
			checkMode := leafMode || q != p
			if checkMode && m&fs.ModeSymlink == 0 && !sticky && (m&0o002 != 0 || (m&0o020 != 0 && st.Gid != 0)) {
				return fmt.Errorf("%s: %s is writable by others (mode %04o), who could %s uses; %s", what, q, m.Perm(), harm, fix)
			}
			if q == "/" {
				break
			}
		}
	}
	return nil
}
