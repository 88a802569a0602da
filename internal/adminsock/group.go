package adminsock

// Group access (docs/admin-guide.md, "Non-root status"): with
// Options.Group the socket is mode 0660 in that group (its directory 0750
// when it is sallyport's own, dir.go), so members can connect without
// sudo. The kernel's permission check on connect lets in only root, the
// process's own user and members of the group; the peer's credentials
// (SO_PEERCRED) then tell them apart: root and the process's user may send
// every command, anyone else only the read-only ones (ReadOnly) and those
// listed in Options.GroupCmds.

import (
	"fmt"
	"log/slog"
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

// share gives group read/write on the socket and, when the directory is
// sallyport's own (dir.go), traversal of it (group, 0750); anyone else's
// directory is left as it is. If a directory on the way keeps the group
// out, log says which and how to let it through (the socket still works
// for root and this user).
func share(path string, gid int, own bool, log *slog.Logger) error {
	if err := setGroup(path, gid); err != nil {
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	if own {
		if err := setGroup(dir, gid); err != nil {
			return fmt.Errorf("admin socket directory %s: %w", dir, err)
		}
		if err := os.Chmod(dir, 0o750); err != nil {
			return fmt.Errorf("admin socket directory %s: %w", dir, err)
		}
	}
	if ok, block, mode := groupCanReach(dir, gid); !ok && log != nil {
		log.Warn("members of the admin group cannot reach the admin socket: a directory on the way keeps them out, and it is not sallyport's, so it is left as it is; "+
			"put the socket in a directory of its own (one sallyport creates, or the unit's RuntimeDirectory=), or let the group through",
			"socket", path, "gid", gid, "directory", block, "mode", mode.String())
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
