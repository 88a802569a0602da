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
	// A directory someone else could change: another user's (as root, the
	// test gives it to nobody), one a group other than the process's may
	// write, one below another user's directory, and one someone else
	// made between our look and our mkdir. A sticky parent (/tmp) is fine.
	t.Run("someone else could change it", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to give directories to another user")
		}
		mk := func(t *testing.T, dir string, mode fs.FileMode, uid, gid int) {
			t.Helper()
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(dir, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		refused := func(t *testing.T, sock, bad, why string) {
			t.Helper()
			_, err := Listen(sock, nil, nil)
			var ue *UnsafeDirError
			if !errors.As(err, &ue) || !strings.HasPrefix(err.Error(), "admin socket "+sock+": directory "+bad+" "+why) {
				t.Fatalf("%v, want %s refused: %s", err, bad, why)
			}
			if _, err := os.Lstat(sock); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("a socket was made: %v", err)
			}
		}
		base := t.TempDir()
		foreign := filepath.Join(base, "foreign")
		mk(t, foreign, 0o755, 65534, 65534)
		refused(t, filepath.Join(foreign, "s.sock"), foreign, "belongs to uid 65534")
		gw := filepath.Join(base, "groupw")
		mk(t, gw, 0o770, 0, 65534)
		refused(t, filepath.Join(gw, "s.sock"), gw, "is writable by its group")
		below := filepath.Join(foreign, "run")
		mk(t, below, 0o700, 0, 0)
		refused(t, filepath.Join(below, "s.sock"), foreign, "belongs to uid 65534")
		// This process's own group may write it (a umask of 002 with a
		// group per user); a sticky parent anyone may write is fine.
		own := filepath.Join(base, "owngroup")
		mk(t, own, 0o770, 0, os.Getegid())
		sticky := filepath.Join(base, "tmp")
		mk(t, sticky, 0o777|fs.ModeSticky, 0, 0)
		mine := filepath.Join(sticky, "mine")
		mk(t, mine, 0o700, 0, 0)
		for _, d := range []string{own, mine} {
			s, err := Listen(filepath.Join(d, "s.sock"), nil, nil)
			if err != nil {
				t.Fatalf("%s: %v", d, err)
			}
			s.Close()
		}
		// Made by someone else in the moment between look and mkdir.
		raced := filepath.Join(sticky, "raced")
		beforeMkdir = func(dir string) { mk(t, dir, 0o755, 65534, 65534) }
		defer func() { beforeMkdir = func(string) {} }()
		refused(t, filepath.Join(raced, "s.sock"), raced, "belongs to uid 65534")
		if _, err := os.Lstat(filepath.Join(raced, markerName)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("marked someone else's directory as sallyport's: %v", err)
		}
		// ... or a symlink to a directory of root's (/etc, say): not
		// marked, not given to a group.
		etc := filepath.Join(base, "etc")
		mk(t, etc, 0o755, 0, 0)
		beforeMkdir = func(dir string) {
			if err := os.Symlink(etc, dir); err != nil {
				t.Fatal(err)
			}
		}
		linked := filepath.Join(sticky, "linked")
		if _, err := listenGroup(t, filepath.Join(linked, "s.sock"), nil); err == nil || !strings.Contains(err.Error(), linked+" is not a directory") {
			t.Fatalf("a symlink planted in place of the directory: %v", err)
		}
		if m, g := modeGroup(t, etc); m.Perm() != 0o755 || g != 0 {
			t.Fatalf("the symlink's target was changed: %v gid %d", m, g)
		}
		if _, err := os.Lstat(filepath.Join(etc, markerName)); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("marked the symlink's target as sallyport's: %v", err)
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
