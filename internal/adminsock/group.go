package adminsock

// Group access (docs/admin-guide.md, "Non-root status"): with Options.Group the socket is
// mode 0660 in that group (its directory 0750 when this process owns it),
// so members can connect without sudo. The kernel's permission check on
// connect lets in only root, the process's own user and members of the
// group; the peer's credentials (SO_PEERCRED) then tell them apart: root
// and the process's user may send every command, anyone else only the
// read-only ones (ReadOnly) and those listed in Options.GroupCmds.

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
)

// Options change how Listen sets up the socket.
type Options struct {
	// Group, if set, is the group (name or numeric id) whose members may
	// use the socket for ReadOnly commands.
	Group string
	// GroupCmds are further commands the group may send.
	GroupCmds []string
	// ReadOnly are the commands that change nothing ("status").
	ReadOnly []string
}

// Peer is who is on the other end of a connection.
type Peer struct {
	UID, GID int
	PID      int32
	Known    bool // false where the platform cannot tell
}

// LookupGroup returns the numeric id of group (a name or a number).
func LookupGroup(group string) (int, error) {
	if id, err := strconv.Atoi(group); err == nil {
		return id, nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("admin group %q: %w", group, err)
	}
	return strconv.Atoi(g.Gid)
}

// share gives group read/write on the socket and, when this process owns
// the socket's directory, traversal of it.
func share(path string, gid int) error {
	if err := setGroup(path, gid); err != nil {
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("admin socket directory %s: %w", dir, err)
	}
	if owner(fi) != os.Geteuid() {
		return nil // someone else's directory (RuntimeDirectory=, /run): leave it
	}
	if err := setGroup(dir, gid); err != nil {
		return fmt.Errorf("admin socket directory %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o750); err != nil {
		return fmt.Errorf("admin socket directory %s: %w", dir, err)
	}
	return nil
}

// setGroup gives path group gid unless it has it already: a daemon whose
// own group is the admin group (Group= in the unit) changes nothing, one
// in it as a supplementary group may chgrp without CAP_CHOWN.
func setGroup(path string, gid int) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if group(fi) == gid {
		return nil
	}
	if err := os.Chown(path, -1, gid); err != nil {
		return fmt.Errorf("group: %w", err) // cli's start hint names SupplementaryGroups=
	}
	return nil
}

// allowed reports whether peer may send cmd.
func (o *Options) allowed(peer Peer, cmd string) error {
	if o.Group == "" {
		return nil // mode 0600: only root and the owner can connect at all
	}
	if !peer.Known {
		return fmt.Errorf("%s: cannot tell who is asking; refused", cmd)
	}
	if peer.UID == 0 || peer.UID == os.Geteuid() {
		return nil
	}
	if slices.Contains(o.ReadOnly, cmd) || slices.Contains(o.GroupCmds, cmd) {
		return nil
	}
	return fmt.Errorf("%s: permission denied (members of group %s may only use %v; run as root)", cmd, o.Group, append(slices.Clone(o.ReadOnly), o.GroupCmds...))
}

// peerOf returns the credentials of c's peer.
func peerOf(c net.Conn) Peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}
	}
	return peerCred(uc)
}
