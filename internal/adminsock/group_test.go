//go:build linux

package adminsock

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
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

// testGroup is a group the test may give files to: as root any (nogroup,
// 65534, so a change shows), else the test's own.
func testGroup() int {
	if os.Geteuid() == 0 {
		return 65534
	}
	return os.Getegid()
}

func modeGroup(t *testing.T, path string) (os.FileMode, int) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode(), int(fi.Sys().(*syscall.Stat_t).Gid)
}

func listenGroup(t *testing.T, path string, logs *strings.Builder) (*Server, error) {
	var log *slog.Logger
	if logs != nil {
		log = slog.New(slog.NewTextHandler(logs, nil))
	}
	return ListenOptions(path, Options{Group: itoa(testGroup()), ReadOnly: []string{"status"}}, func(context.Context, Request) (any, error) {
		return "ok", nil
	}, log)
}

// The socket's directory: one anyone may write (/tmp) is refused with an
// error naming it and the fix, and left untouched; one sallyport did not
// make (here: ours, but unmarked, as /run is root's for a root client) is
// never given to the group or re-moded, even when this process owns it,
// and a group it keeps out is warned about; one sallyport made (marked,
// across a restart) or the unit's RuntimeDirectory= is given to the group;
// a marker someone else planted does not count.
func TestSocketDirRules(t *testing.T) {
	gid := testGroup()
	t.Run("world-writable", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "tmp")
		if err := os.Mkdir(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
			t.Fatal(err)
		}
		before, beforeGID := modeGroup(t, dir)
		for _, group := range []bool{false, true} {
			var err error
			if group {
				_, err = listenGroup(t, filepath.Join(dir, "s.sock"), nil)
			} else {
				_, err = Listen(filepath.Join(dir, "s.sock"), nil, nil)
			}
			var ue *UnsafeDirError
			if !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "admin socket "+dir+"/s.sock: directory "+dir+" is writable by everyone") ||
				!strings.Contains(err.Error(), "/run/sallyport/s.sock") {
				t.Fatalf("group=%v: %v, want the directory refused with the fix", group, err)
			}
		}
		if after, afterGID := modeGroup(t, dir); after != before || afterGID != beforeGID {
			t.Fatalf("the refused directory was changed: %v gid %d -> %v gid %d", before, beforeGID, after, afterGID)
		}
		if _, err := os.Stat(filepath.Join(dir, "s.sock")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a socket was made in it: %v", err)
		}
	})
	t.Run("not sallyport's", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "run")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		before, beforeGID := modeGroup(t, dir)
		var logs strings.Builder
		s, err := listenGroup(t, filepath.Join(dir, "s.sock"), &logs)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if after, afterGID := modeGroup(t, dir); after != before || afterGID != beforeGID {
			t.Fatalf("someone else's directory changed: %v gid %d -> %v gid %d", before, beforeGID, after, afterGID)
		}
		if !strings.Contains(logs.String(), "cannot reach the admin socket") || !strings.Contains(logs.String(), "directory="+dir) {
			t.Fatalf("no warning that the group is kept out: %s", logs.String())
		}
	})
	t.Run("made by sallyport, restarted", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "run")
		s, err := Listen(filepath.Join(dir, "s.sock"), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if m, _ := modeGroup(t, dir); m.Perm() != 0o700 {
			t.Fatalf("made with %v, want 0700", m)
		}
		// The next start, now with a group: the directory is its own.
		s, err = listenGroup(t, filepath.Join(dir, "s.sock"), nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if m, g := modeGroup(t, dir); m.Perm() != 0o750 || g != gid {
			t.Fatalf("own directory %v gid %d, want 0750 in %d", m, g, gid)
		}
	})
	t.Run("RuntimeDirectory=", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "sallyport")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		t.Setenv("RUNTIME_DIRECTORY", "/elsewhere:"+dir+"/")
		s, err := listenGroup(t, filepath.Join(dir, "s.sock"), nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if m, g := modeGroup(t, dir); m.Perm() != 0o750 || g != gid {
			t.Fatalf("the unit's directory %v gid %d, want 0750 in %d", m, g, gid)
		}
	})
	t.Run("planted marker", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to give the marker to another user")
		}
		dir := filepath.Join(t.TempDir(), "run")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		m := filepath.Join(dir, markerName)
		if err := os.WriteFile(m, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(m, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		s, err := listenGroup(t, filepath.Join(dir, "s.sock"), nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if m, _ := modeGroup(t, dir); m.Perm() != 0o700 {
			t.Fatalf("a marker of another user made the directory ours: %v", m)
		}
	})
}
