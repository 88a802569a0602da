package server

// Checking the gateway's files as the gateway's user. The packaged gateway
// runs as the unprivileged user of its unit (sallyport), so a config that
// loads for root can still fail at start: a directory it cannot enter, a
// key it may not read, a file its sandbox hides. `sallyport server check`,
// run as root, therefore also runs its file checks again as that user
// (checkas_linux.go re-runs the command under the user's uid and groups)
// and, when that fails, names the fix: which directory or file keeps the
// user out, and the chgrp/chmod that lets it in.

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sallyport/sallyport/internal/sdunit"
	"github.com/sallyport/sallyport/pki"
)

// UnitName is the packaged gateway's systemd unit.
const UnitName = "sallyport-server.service"

// DefaultConfigPath is the config the packaged unit runs.
const DefaultConfigPath = "/etc/sallyport/server.toml"

// CheckOptions adjust Check.
type CheckOptions struct {
	// Credentials maps a file the config names to the file it is read
	// from instead: a systemd credential (LoadCredential=) is checked at
	// the copy systemd would deliver.
	Credentials map[string]string
}

// RunAs is the user `server check` runs its file checks as, and where that
// choice came from.
type RunAs struct {
	User   string
	UID    int
	GID    int
	Groups []int  // supplementary groups, as systemd's initgroups() and SupplementaryGroups= give them
	From   string // e.g. "User= of /lib/systemd/system/sallyport-server.service"
	// Unit is the gateway's unit when one is installed: its credentials
	// and sandbox are applied to the check.
	Unit *sdunit.Unit
}

// CheckCommand is `sallyport server check -c path --as as`: Check as the
// caller, with the files the gateway's unit receives as credentials read
// from where systemd loads them (plus extra, from --credential), then, when
// CheckUser picks a user, CheckFilesAs that user by running exe.
func CheckCommand(path, as string, extra map[string]string, exe string) (*CheckResult, error) {
	euid := os.Geteuid()
	r, note, err := CheckUser(path, as, euid)
	if err != nil {
		return nil, err
	}
	creds := map[string]string{}
	for k, v := range extra {
		creds[filepath.Clean(k)] = v
	}
	if euid == 0 {
		unit := (*sdunit.Unit)(nil)
		if r != nil {
			unit = r.Unit
		} else if u, err := sdunit.Load(UnitName); err == nil {
			unit = u
		}
		cfg, err := LoadConfig(path)
		if err != nil {
			return nil, err
		}
		src, err := credentialSources(cfg, unit)
		if err != nil {
			return nil, err
		}
		for k, v := range src {
			creds[k] = v
		}
	}
	res, err := CheckWith(path, CheckOptions{Credentials: creds})
	if err != nil {
		return nil, err
	}
	res.Note = note
	if r == nil {
		return res, nil
	}
	if err := CheckFilesAs(res.Config, r, exe); err != nil {
		return nil, err
	}
	res.CheckedAs = r.User + " (" + r.From + ")"
	return res, nil
}

// CheckUser decides who `server check -c config --as as` checks the files
// as, for a caller with effective uid euid. as is "auto", "root", or a
// user name. nil means no second pass (checked as the caller only); note
// then says why, when it is worth saying.
//
// auto, as root: the User= of sallyport-server.service when the unit runs
// this config (its -c, or /etc/sallyport/server.toml), else the sallyport
// user for /etc/sallyport/server.toml when no unit is installed. A config
// somewhere else is checked as root only: nothing says who will run it.
func CheckUser(config, as string, euid int) (*RunAs, string, error) {
	unit, uerr := sdunit.Load(UnitName)
	if uerr != nil {
		unit = nil
	}
	if as == "" || as == "auto" {
		if euid != 0 {
			return nil, "", nil
		}
		unitConfig, user, from := DefaultConfigPath, pki.KeyGroup, "the gateway's user "+pki.KeyGroup+" (no "+UnitName+" installed)"
		if unit != nil {
			if c, ok := unit.Flag("-c", "--config"); ok {
				unitConfig = c
			}
			user, from = unit.User, "User= of "+unit.Path
			if user == "" {
				user = "root"
			}
		}
		if !sameFile(config, unitConfig) {
			return nil, fmt.Sprintf("files checked as root only: %s runs %s (--as USER checks them as another user)", UnitName, unitConfig), nil
		}
		if user == "root" || user == "0" {
			return nil, "", nil
		}
		if unit == nil {
			if _, err := lookupUser(user, nil); err != nil {
				return nil, "", nil // no package here: nothing to check as
			}
		}
		r, err := lookupUser(user, unit)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", from, err)
		}
		r.From = from
		return r, "", nil
	}
	if as == "root" || as == "0" {
		return nil, "", nil
	}
	if euid != 0 {
		return nil, "", fmt.Errorf("--as %s needs root (it runs the checks under that user's uid)", as)
	}
	r, err := lookupUser(as, unit)
	if err != nil {
		return nil, "", err
	}
	r.From = "--as " + as
	return r, "", nil
}

func sameFile(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	if errA != nil || errB != nil {
		ca, _ := filepath.Abs(a)
		cb, _ := filepath.Abs(b)
		return filepath.Clean(ca) == filepath.Clean(cb)
	}
	return os.SameFile(fa, fb)
}

// gatewayFiles lists the files the gateway reads at start and on reload,
// each with the config key that names it.
func gatewayFiles(c *Config) [][2]string {
	out := [][2]string{{"config", c.Path}, {"tls.cert", c.TLS.Cert}, {"tls.key", c.TLS.Key}, {"tls.client_ca", c.TLS.ClientCA}}
	if c.TLS.CRL != "" {
		out = append(out, [2]string{"tls.crl", c.TLS.CRL})
	}
	for _, f := range [][2]string{{"renewal.issuer_cert", c.Renewal.IssuerCert}, {"renewal.issuer_key", c.Renewal.IssuerKey}, {"renewal.ca_bundle", c.Renewal.CABundle}} {
		if f[1] != "" {
			out = append(out, f)
		}
	}
	return out
}

// isKey reports whether the config key names a private key (checked like
// the gateway key, and shared the same way).
func isKey(key string) bool { return key == "tls.key" || key == "renewal.issuer_key" }

// stateFiles maps the files of c that live in the unit's StateDirectory=
// (the lease file, the renewal record) to the same name under emu: systemd
// creates that directory and hands it to the unit's user at start, so what
// is there now (perhaps root's, perhaps nothing) says nothing about the
// gateway's access.
func stateFiles(c *Config, u *sdunit.Unit, emu string) map[string]string {
	out := map[string]string{}
	if u == nil {
		return out
	}
	for _, f := range []string{c.Tunnel.LeaseFile, c.Renewal.Record} {
		for _, sd := range u.StateDirectory {
			dir := filepath.Join("/var/lib", sd)
			if f != "" && under(filepath.Clean(f), dir) && filepath.Clean(f) != dir {
				rel, _ := filepath.Rel(dir, filepath.Clean(f))
				out[f] = filepath.Join(emu, sd, rel)
			}
		}
	}
	return out
}

// credentialOf returns the credential ID when path lies in the unit's
// credentials directory.
func credentialOf(u *sdunit.Unit, path string) (string, bool) {
	if u == nil {
		return "", false
	}
	rel, ok := strings.CutPrefix(filepath.Clean(path), u.CredentialsDir()+"/")
	return rel, ok && rel != "" && !strings.Contains(rel, "/")
}

// credentialSources maps every file of c that is one of the unit's
// credentials to the file systemd loads it from, and refuses one the unit
// does not load.
func credentialSources(c *Config, u *sdunit.Unit) (map[string]string, error) {
	out := map[string]string{}
	if u == nil {
		return out, nil // nothing says where a credential comes from: read it where it is
	}
	for _, f := range gatewayFiles(c) {
		id, ok := credentialOf(u, f[1])
		if !ok {
			if strings.HasPrefix(f[1], "/run/credentials/") {
				return nil, fmt.Errorf("%s %s is a systemd credential, but not of %s (its credentials are in %s)", f[0], f[1], UnitName, credentialsDirOf(u))
			}
			continue
		}
		if slices.Contains(u.EncryptedCredentials, id) {
			continue // only systemd can decrypt it; the start will tell
		}
		src, ok := u.Credentials[id]
		if !ok || src == "" {
			return nil, fmt.Errorf("%s %s is the credential %q of %s, but the unit loads no such credential: add LoadCredential=%s:FILE with systemctl edit %s",
				f[0], f[1], id, UnitName, id, strings.TrimSuffix(UnitName, ".service"))
		}
		out[f[1]] = src
	}
	return out, nil
}

func credentialsDirOf(u *sdunit.Unit) string {
	if u == nil {
		return "/run/credentials/" + UnitName + " (no unit installed)"
	}
	return u.CredentialsDir()
}

// hiddenFiles names the files of c that the unit's sandbox hides from the
// gateway.
func hiddenFiles(c *Config, u *sdunit.Unit) error {
	if u == nil {
		return nil
	}
	var msgs []string
	for _, f := range gatewayFiles(c) {
		if _, cred := credentialOf(u, f[1]); cred {
			continue
		}
		if why := u.Hidden(f[1]); why != "" {
			msgs = append(msgs, fmt.Sprintf("%s %s: the gateway cannot see it (%s); keep the gateway's files under /etc/sallyport", f[0], f[1], why))
		}
	}
	if len(msgs) > 0 {
		return fmt.Errorf("%s", strings.Join(msgs, "; "))
	}
	return nil
}

// fileStat is what accessFix needs to know of one path.
type fileStat struct {
	mode     fs.FileMode
	uid, gid int
}

// accessFix says which components of path keep user r out, each with the
// command that lets it in (none when the mode bits let it through: then
// ACLs, a security module or the sandbox are to blame). Directories need search
// (x), the file itself read (r). A key gets the one sharing
// pki.CheckKeyPerm accepts (0640, group sallyport) or the credential. Only
// directories of the gateway's own (/etc/sallyport, or the config's
// directory and below) are offered a chgrp; a system or home directory is
// not.
func accessFix(path, configDir string, r *RunAs, isKey bool, stat func(string) (fileStat, error), n names) []string {
	var fixes []string
	path = filepath.Clean(path)
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	cur := "/"
	for i := 0; i <= len(parts); i++ {
		if i > 0 {
			cur = filepath.Join(cur, parts[i-1])
		}
		st, err := stat(cur)
		if err != nil {
			return append(fixes, fmt.Sprintf("%s: %v", cur, err))
		}
		last := i == len(parts)
		need := fs.FileMode(0o1) // search
		if last {
			need = 0o4 // read
		}
		if allowed(st, r, need) {
			continue
		}
		who := fmt.Sprintf("%s is %s:%s %04o, so user %s cannot %s it", cur, n.user(st.uid), n.group(st.gid), st.mode.Perm(), r.User,
			map[bool]string{true: "read", false: "enter"}[last])
		g := n.group(r.GID)
		ours := under(cur, "/etc/sallyport") || configDir != "" && under(cur, filepath.Clean(configDir))
		switch {
		case last && isKey:
			fixes = append(fixes, fmt.Sprintf("%s: chgrp %s %s && chmod 0640 %s (or hand it over with LoadCredential=, see docs/admin-guide.md)", who, pki.KeyGroup, cur, cur))
		case last:
			fixes = append(fixes, fmt.Sprintf("%s: chgrp %s %s && chmod g+r %s", who, g, cur, cur))
		case !ours:
			// Not ours to open up: say so and stop here.
			return append(fixes, who+": keep the gateway's files under /etc/sallyport")
		case st.gid == r.GID || slices.Contains(r.Groups, st.gid):
			fixes = append(fixes, fmt.Sprintf("%s: chmod g+x %s", who, cur))
		default:
			fixes = append(fixes, fmt.Sprintf("%s: chgrp %s %s && chmod 0750 %s", who, g, cur, cur))
		}
	}
	return fixes
}

// under reports whether path is dir or inside it.
func under(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

// names turns ids into names for messages.
type names struct {
	user  func(uid int) string
	group func(gid int) string
}

// allowed applies the owner/group/other permission bits (no ACLs).
func allowed(st fileStat, r *RunAs, need fs.FileMode) bool {
	m := st.mode.Perm()
	switch {
	case st.uid == r.UID:
		return m&(need<<6) != 0
	case st.gid == r.GID || slices.Contains(r.Groups, st.gid):
		return m&(need<<3) != 0
	}
	return m&need != 0
}
