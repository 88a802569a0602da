package ca

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"

	"github.com/sallyport/sallyport/pki"
)

// Sharing with the gateway's group. The packaged gateway runs as the
// unprivileged user sallyport and must read its own certificate and key,
// the trust bundle and the CRL, but never a CA key or a device's key. A PKI
// made inside a directory of the group sallyport (the package makes
// /etc/sallyport root:sallyport 0750) is therefore laid out so:
//
//	DIR/                 0750 root:sallyport   (0700 when not shared)
//	DIR/ca.crt, crl.pem  0644                  (public; the gateway reads them)
//	DIR/servers/         0750 root:sallyport
//	DIR/servers/H.crt    0644
//	DIR/servers/H.key    0640 root:sallyport   (pki.CheckKeyPerm accepts it)
//	DIR/root.key, intermediate.key, index.db, .lock   0600 root
//	DIR/devices/         0700 root             (device keys: never the gateway's)
//
// Whether a PKI is shared is read from the directory itself: its group (or,
// before init creates it, its parent's) is the gateway's group. Nothing is
// recorded elsewhere, so an admin who un-shares the directory (chgrp root)
// gets owner-only files from then on.

// ShareGroup is the group a PKI directory shares the gateway's files with
// (pki.KeyGroup, the group the packaged gateway runs as). A variable so
// tests can use a group every machine has.
var ShareGroup = pki.KeyGroup

// shareGID returns the gid of ShareGroup when path belongs to that group,
// and -1 otherwise (also when the group does not exist on this machine or
// path does not exist).
func shareGID(path string) int {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	fgid, ok := fileGID(fi)
	if !ok {
		return -1
	}
	g, err := user.LookupGroup(ShareGroup)
	if err != nil {
		return -1
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil || uint32(gid) != fgid {
		return -1
	}
	return gid
}

// Shared reports the group the PKI directory shares the gateway's files
// with ("" when it shares nothing).
func (p *PKI) Shared() string {
	if shareGID(p.Dir) < 0 {
		return ""
	}
	return ShareGroup
}

// initShare is the gid init shares the new PKI with: that of ShareGroup when
// the directory exists and belongs to it, or does not exist yet and its
// parent does; -1 for a private PKI.
func (p *PKI) initShare() int {
	if _, err := os.Stat(p.Dir); err == nil {
		return shareGID(p.Dir)
	}
	abs, err := filepath.Abs(p.Dir)
	if err != nil {
		return -1
	}
	return shareGID(filepath.Dir(abs))
}

// shareDir gives dir mode 0750 and group gid when gid >= 0 (0700 stays as
// MkdirAll made it otherwise).
func shareDir(dir string, gid int) error {
	if gid < 0 {
		return nil
	}
	if err := os.Chown(dir, -1, gid); err != nil {
		return fmt.Errorf("share %s with group %s: %w (run as root, or use a --dir outside the gateway's directory)", dir, ShareGroup, err)
	}
	if err := os.Chmod(dir, 0o750); err != nil {
		return fmt.Errorf("share %s with group %s: %w", dir, ShareGroup, err)
	}
	return nil
}

// shareKey makes a gateway key readable by group gid (mode 0640) when gid
// >= 0. The group is set before the mode, so the key is never readable by
// a group other than the gateway's.
func shareKey(path string, gid int) error {
	if gid < 0 {
		return nil
	}
	if err := os.Chown(path, -1, gid); err != nil {
		return fmt.Errorf("share %s with group %s: %w (run as root)", path, ShareGroup, err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		return fmt.Errorf("share %s with group %s: %w", path, ShareGroup, err)
	}
	return nil
}
