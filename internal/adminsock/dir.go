package adminsock

// The socket's directory. A socket in a directory everyone may write
// (/tmp) can be replaced or squatted by any local user, who then answers
// `status` and `down` in sallyport's place: such a directory is refused.
// Group access (group.go) needs the group to reach the socket through its
// directory, but sallyport changes the group and mode only of a directory
// that is its own: one it created (and marked, so a restart still knows),
// or the unit's RuntimeDirectory= (systemd made it for this service and
// says so in $RUNTIME_DIRECTORY). Anyone else's directory (/run, a home
// directory) is left as it is.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// markerName is the file sallyport leaves in a socket directory it
// created, so a later start knows the directory is its own.
const markerName = ".sallyport-admin-dir"

// UnsafeDirError is a socket path in a directory anyone may write.
type UnsafeDirError struct {
	Socket, Dir string
	Mode        fs.FileMode
}

func (e *UnsafeDirError) Error() string {
	return fmt.Sprintf("admin socket %s: directory %s is writable by everyone (mode %v): another user could replace the socket "+
		"or listen in its place; set [admin] socket to a path in a directory of sallyport's own, such as /run/sallyport/%s",
		e.Socket, e.Dir, e.Mode, filepath.Base(e.Socket))
}

// prepareDir makes sure the socket's directory exists and is safe, and
// reports whether it is sallyport's own (see the file comment). A
// directory it has to create is made 0700 and marked.
func prepareDir(path string) (own bool, err error) {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, err
		}
		if err := mark(dir); err != nil {
			return false, fmt.Errorf("mark %s as sallyport's: %w", dir, err)
		}
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("%s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o002 != 0 {
		return false, &UnsafeDirError{Socket: path, Dir: dir, Mode: fi.Mode()}
	}
	return ownDir(dir, fi), nil
}

// mark leaves the marker in dir, which this process just created.
func mark(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, markerName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// ownDir reports whether dir (fi) is sallyport's: the unit's
// RuntimeDirectory=, or a directory of this user holding this user's
// marker.
func ownDir(dir string, fi fs.FileInfo) bool {
	clean := filepath.Clean(dir)
	for _, d := range strings.Split(os.Getenv("RUNTIME_DIRECTORY"), ":") {
		if d != "" && filepath.Clean(d) == clean {
			return true
		}
	}
	if owner(fi) != os.Geteuid() {
		return false
	}
	mi, err := os.Lstat(filepath.Join(dir, markerName))
	return err == nil && mi.Mode().IsRegular() && owner(mi) == os.Geteuid()
}

// groupCanReach reports whether members of gid can search every directory
// from dir up to the root (and so reach a socket in dir), and if not, the
// first one that stops them.
func groupCanReach(dir string, gid int) (bool, string, fs.FileMode) {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return false, d, 0
		}
		m := fi.Mode().Perm()
		if m&0o001 == 0 && (group(fi) != gid || m&0o010 == 0) {
			return false, d, fi.Mode()
		}
		if d == filepath.Dir(d) {
			return true, "", 0
		}
	}
}
