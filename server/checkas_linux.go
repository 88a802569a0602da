package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sallyport/sallyport/internal/sdunit"
	"github.com/sallyport/sallyport/internal/userfile"
)

// lookupUser resolves name to its uid, primary gid and supplementary groups
// (initgroups(), as systemd gives a User= service), then applies the
// unit's Group= and SupplementaryGroups= when a unit is given.
func lookupUser(name string, u *sdunit.Unit) (*RunAs, error) {
	us, err := user.Lookup(name)
	if err != nil {
		if id, aerr := strconv.Atoi(name); aerr == nil {
			us, err = user.LookupId(strconv.Itoa(id))
		}
		if err != nil {
			return nil, fmt.Errorf("user %q: %w", name, err)
		}
	}
	r := &RunAs{User: us.Username}
	r.UID, _ = strconv.Atoi(us.Uid)
	r.GID, _ = strconv.Atoi(us.Gid)
	if ids, err := us.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.Atoi(id); err == nil && !slices.Contains(r.Groups, g) {
				r.Groups = append(r.Groups, g)
			}
		}
	}
	if u != nil {
		if u.Group != "" {
			gid, err := lookupGID(u.Group)
			if err != nil {
				return nil, fmt.Errorf("unit %s: Group=%s: %w", u.Path, u.Group, err)
			}
			r.GID = gid
		}
		for _, name := range u.SupplementaryGroups {
			gid, err := lookupGID(name)
			if err != nil {
				return nil, fmt.Errorf("unit %s: SupplementaryGroups=%s: %w", u.Path, name, err)
			}
			if !slices.Contains(r.Groups, gid) {
				r.Groups = append(r.Groups, gid)
			}
		}
		r.Unit = u
	}
	return r, nil
}

func lookupGID(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		if _, aerr := strconv.Atoi(name); aerr == nil {
			return strconv.Atoi(name)
		}
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

// checkAsTimeout bounds the second pass (it loads a few files).
const checkAsTimeout = time.Minute

// CheckFilesAs runs `exe server check -c config` again under r's uid and
// groups, as the gateway's unit would run: with the unit's credentials
// delivered as systemd delivers them (a copy readable by the user only, in
// a directory named by $CREDENTIALS_DIRECTORY) and its sandbox applied. cfg
// is the config as root loaded it. An error says what failed for the user
// and, where the mode bits are to blame, the command that fixes it.
func CheckFilesAs(cfg *Config, r *RunAs, exe string) error {
	creds, err := credentialSources(cfg, r.Unit)
	if err != nil {
		return err
	}
	if err := hiddenFiles(cfg, r.Unit); err != nil {
		return fmt.Errorf("as user %s (%s): %w", r.User, r.From, err)
	}
	config, err := filepath.Abs(cfg.Path)
	if err != nil {
		return err
	}
	args := []string{"server", "check", "-c", config, "--as", "auto"}
	env := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	if len(creds) > 0 {
		dir, err := os.MkdirTemp("", "sallyport-check-credentials-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		for dst, src := range creds {
			b, err := userfile.Read(src, userfile.MaxPEM)
			if err != nil {
				return fmt.Errorf("credential %s: systemd would load it from %s: %w", dst, src, err)
			}
			cp := filepath.Join(dir, filepath.Base(dst))
			if err := os.WriteFile(cp, b, 0o400); err != nil {
				return err
			}
			if err := os.Chown(cp, r.UID, r.GID); err != nil {
				return err
			}
			args = append(args, "--credential", dst+"="+cp)
		}
		if err := os.Chown(dir, r.UID, r.GID); err != nil {
			return err
		}
		if err := os.Chmod(dir, 0o500); err != nil {
			return err
		}
		env = append(env, "CREDENTIALS_DIRECTORY="+dir)
	}
	if r.Unit != nil && len(r.Unit.StateDirectory) > 0 {
		// StateDirectory=: systemd makes it and gives it to the user at
		// start; the second pass gets an empty one of its own.
		emu, err := os.MkdirTemp("", "sallyport-check-state-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(emu)
		var dirs []string
		for _, sd := range r.Unit.StateDirectory {
			d := filepath.Join(emu, sd)
			if err := os.MkdirAll(d, 0o700); err != nil {
				return err
			}
			dirs = append(dirs, d)
		}
		if err := chownTree(emu, r.UID, r.GID); err != nil {
			return err
		}
		for dst, src := range stateFiles(cfg, r.Unit, emu) {
			args = append(args, "--credential", dst+"="+src)
		}
		env = append(env, "STATE_DIRECTORY="+strings.Join(dirs, ":"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), checkAsTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Dir = "/"
	cmd.Env = env
	groups := make([]uint32, len(r.Groups))
	for i, g := range r.Groups {
		groups[i] = uint32(g)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(r.UID), Gid: uint32(r.GID), Groups: groups}}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("as user %s (%s): cannot run %s: %w (check with an installed binary the user may run, or --as root)", r.User, r.From, exe, err)
	}
	msg := strings.TrimSpace(out.String())
	if i := strings.LastIndex(msg, "\n"); i >= 0 {
		msg = msg[i+1:] // the error is the last line; warnings come first
	}
	msg = strings.TrimPrefix(msg, "sallyport: ")
	var fixes []string
	for _, f := range gatewayFiles(cfg) {
		if _, ok := creds[f[1]]; ok {
			continue
		}
		// accessFix walks from /: a config given as "-c server.toml" names
		// its files relative to the admin's directory.
		abs, err := filepath.Abs(f[1])
		if err != nil {
			continue
		}
		for _, fix := range accessFix(abs, filepath.Dir(config), r, isKey(f[0]), statFile, systemNames) {
			if !slices.Contains(fixes, fix) {
				fixes = append(fixes, fix)
			}
		}
	}
	if len(fixes) > 0 {
		return fmt.Errorf("as user %s (%s): %s; fix: %s", r.User, r.From, msg, strings.Join(fixes, "; "))
	}
	return fmt.Errorf("as user %s (%s): %s", r.User, r.From, msg)
}

func statFile(path string) (fileStat, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStat{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileStat{}, fmt.Errorf("no owner for %s", path)
	}
	return fileStat{mode: fi.Mode(), uid: int(st.Uid), gid: int(st.Gid)}, nil
}

var systemNames = names{
	user: func(uid int) string {
		if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
			return u.Username
		}
		return strconv.Itoa(uid)
	},
	group: func(gid int) string {
		if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
			return g.Name
		}
		return strconv.Itoa(gid)
	},
}

// chownTree gives dir and everything under it to uid:gid.
func chownTree(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, gid)
	})
}
