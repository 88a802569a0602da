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
	euid := os.Geteuid()
	for _, p := range []string{path, real} {
		for q := p; ; q = filepath.Dir(q) {
			fi, err := os.Lstat(q)
			if err != nil {
				return fmt.Errorf("PKCS#11 module %s: %w", path, err)
			}
			st, ok := fi.Sys().(*syscall.Stat_t)
			if !ok {
				return fmt.Errorf("PKCS#11 module %s: cannot tell who owns %s", path, q)
			}
			if st.Uid != 0 && int(st.Uid) != euid {
				return fmt.Errorf("PKCS#11 module %s: %s belongs to uid %d, who could replace the library this client (uid %d) loads; install the module as root", path, q, st.Uid, euid)
			}
			m := fi.Mode()
			sticky := m.IsDir() && m&fs.ModeSticky != 0 && q != p
			if m&fs.ModeSymlink == 0 && !sticky && (m&0o002 != 0 || (m&0o020 != 0 && st.Gid != 0)) {
				return fmt.Errorf("PKCS#11 module %s: %s is writable by others (mode %04o), who could replace the library this client loads", path, q, m.Perm())
			}
			if q == "/" {
				break
			}
		}
	}
	return nil
}
