package adminsock

// The socket's directory. A socket in a directory everyone may write
// (/tmp) can be replaced or squatted by any local user, who then answers
// `status` and `down` in sallyport's place: such a directory is refused.
// Group access (group.go) needs the group to reach the socket through its
// directory, but sallyport changes the group and mode only of a directory
// that is its own: one it created (and marked, so a restart still knows),
// or the unit's RuntimeDirectory= (systemd made it for this service and
// says so in $RUNTIME_DIRECTORY). Anyone else's directory (/run, a home
// directory) is left as it is. The same goes for a directory that belongs
// to another user, one a group may write, and one below such a directory
// (it could be renamed and replaced): refused. The laptop's device locks
// live by the same rules (PrepareDir).

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

// UnsafeDirError is a path for sallyport's runtime files (an admin
// socket, a device lock) in a directory someone else could change: one
// anyone or a group may write, one that belongs to another user, or one
// below such a directory (which could be renamed and replaced).
type UnsafeDirError struct {
	Socket string // the socket, or "" for another runtime file
	Dir    string // the directory at fault: the socket's, or one above it
	Mode   fs.FileMode
	UID    int // its owner
	// Foreign says the owner is neither root nor this user (else the
	// mode lets others write).
	Foreign bool
}

func (e *UnsafeDirError) Error() string {
	why := fmt.Sprintf("directory %s is writable by everyone (mode %v)", e.Dir, e.Mode)
	switch {
	case e.Foreign:
		why = fmt.Sprintf("directory %s belongs to uid %d, not to root or this user (uid %d)", e.Dir, e.UID, os.Geteuid())
	case e.Mode.Perm()&0o002 == 0:
		why = fmt.Sprintf("directory %s is writable by its group (mode %v)", e.Dir, e.Mode)
	}
	if e.Socket == "" {
		return fmt.Sprintf("%s: another user could replace sallyport's files in it; use a directory of sallyport's own, such as /run/sallyport", why)
	}
	return fmt.Sprintf("admin socket %s: %s: another user could replace the socket "+
		"or listen in its place; set [admin] socket to a path in a directory of sallyport's own, such as /run/sallyport/%s",
		e.Socket, why, filepath.Base(e.Socket))
}

// PrepareDir makes sure dir exists and is safe for sallyport's runtime
// files (admin sockets, the laptop's device locks), and reports whether
// it is sallyport's own (see the file comment). A directory it has to
// create is made 0700 and marked. dir and every directory above it must
// belong to root or this user and be writable by nobody else (a
// directory above it may be writable by others if it is sticky, as /tmp
// is: then nobody else can rename what is in it); else the error is an
// *UnsafeDirError.
func PrepareDir(dir string) (own bool, err error) {
	own, err = prepareDir(dir)
	var unsafe *UnsafeDirError
	if errors.As(err, &unsafe) {
		return false, err
	}
	if err != nil {
		return false, fmt.Errorf("directory %s: %w", dir, err)
	}
	return own, nil
}

// prepareDir is PrepareDir for the socket at path, whose errors name it.
func prepareSocketDir(path string) (own bool, err error) {
	own, err = prepareDir(filepath.Dir(path))
	var unsafe *UnsafeDirError
	if errors.As(err, &unsafe) {
		unsafe.Socket = path
	}
	return own, err
}

// beforeMkdir runs between finding a directory missing and making it; a
// test plants someone else's directory there.
var beforeMkdir = func(string) {}

func prepareDir(dir string) (own bool, err error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		beforeMkdir(dir)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, err
		}
		// Someone may have put a directory or a symlink there between the
		// two calls (in a sticky directory they may write): it is ours
		// only if it is a directory, not a link to one, and checks out.
		fi, err := os.Lstat(dir)
		if err != nil {
			return false, err
		}
		if !fi.IsDir() {
			return false, fmt.Errorf("%s is not a directory (%v)", dir, fi.Mode().Type())
		}
		if err := safePath(dir); err != nil {
			return false, err
		}
		if err := mark(dir); err != nil {
			return false, fmt.Errorf("mark %s as sallyport's: %w", dir, err)
		}
		return true, nil
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return false, err
	}
	fi, err := os.Stat(real)
	if err != nil {
		return false, err
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("%s is not a directory", dir)
	}
	if err := safePath(real); err != nil {
		return false, err
	}
	return ownDir(dir, fi), nil
}

// safePath checks dir and every directory above it: each belongs to root
// or this user, and only its owner (and this process's own group, as with
// a umask of 002 and a group per user) may write it; above dir, a sticky
// directory such as /tmp may be writable by all.
func safePath(dir string) error {
	d, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for first := true; ; first = false {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		sticky := !first && fi.Mode()&fs.ModeSticky != 0
		others := fi.Mode().Perm()&0o002 != 0 || (fi.Mode().Perm()&0o020 != 0 && group(fi) != os.Getegid() && group(fi) >= 0)
		if !ownedHere(fi, true) || (others && !sticky) {
			return &UnsafeDirError{Dir: d, Mode: fi.Mode(), UID: owner(fi), Foreign: !ownedHere(fi, true)}
		}
		if d == filepath.Dir(d) {
			return nil
		}
		d = filepath.Dir(d)
	}
}

// ownedHere reports whether fi belongs to this user (or, with root, to
// root). Where the platform cannot tell the owner, it says yes.
func ownedHere(fi fs.FileInfo, root bool) bool {
	o := owner(fi)
	return o < 0 || o == os.Geteuid() || (root && o == 0)
}

// mark leaves the marker in dir, which this process just created.
func mark(dir string) error {
	f, err := os.OpenFile(filepath.Join(dir, markerName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		// Another sallyport that made the directory at the same time.
		if mi, err := os.Lstat(filepath.Join(dir, markerName)); err == nil && mi.Mode().IsRegular() && ownedHere(mi, false) {
			return nil
		}
	}
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
