//go:build linux

package adminsock

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestAllowed(t *testing.T) {
	me := os.Geteuid()
	o := Options{Group: "ops", GroupCmds: []string{"reload"}, ReadOnly: []string{"status"}}
	for _, tc := range []struct {
		name string
		opts Options
		peer Peer
		cmd  string
		ok   bool
	}{
		{"no group: anyone who can connect", Options{}, Peer{}, "kick", true},
		{"root", o, Peer{UID: 0, Known: true}, "kick", true},
		{"the daemon's user", o, Peer{UID: me, Known: true}, "drain", true},
		{"member: status", o, Peer{UID: 4242, GID: 4242, Known: true}, "status", true},
		{"member: a granted command", o, Peer{UID: 4242, Known: true}, "reload", true},
		{"member: kick", o, Peer{UID: 4242, Known: true}, "kick", false},
		{"member: drain", o, Peer{UID: 4242, Known: true}, "drain", false},
		{"unknown peer", o, Peer{}, "status", false},
	} {
		if me == 4242 {
			t.Skip("test uid clash")
		}
		err := tc.opts.allowed(tc.peer, tc.cmd)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestGroupSocket: with a group the socket is 0660 in it and the peer's
// credentials reach the check (here: our own user, allowed everything).
func TestGroupSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	path := filepath.Join(dir, "s.sock")
	gid := os.Getegid()
	s, err := ListenOptions(path, Options{Group: itoa(gid), ReadOnly: []string{"status"}}, func(context.Context, Request) (any, error) {
		return "ok", nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 || int(fi.Sys().(*syscall.Stat_t).Gid) != gid {
		t.Errorf("socket mode %v gid %d, want 0660 in %d", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid, gid)
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o750 {
		t.Errorf("directory mode %v, want 0750", di.Mode().Perm())
	}
	var out string
	if err := Call(path, Request{Cmd: "kick"}, &out); err != nil || out != "ok" {
		t.Errorf("own user: %v %q", err, out)
	}
	if _, err := LookupGroup("no-such-group-sallyport"); err == nil || !strings.Contains(err.Error(), "no-such-group") {
		t.Errorf("unknown group: %v", err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
