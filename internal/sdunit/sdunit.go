// Package sdunit reads, from an installed systemd service unit and its
// drop-ins, how the service will run: its user and groups, the credentials
// systemd hands it (LoadCredential=), the file-system sandbox settings that
// hide paths from it, and its command line. `sallyport server check` uses it
// to check the gateway's files as the unit's user would read them.
//
// It reads the files as systemd does (search path, $SYSTEMD_UNIT_PATH,
// drop-in directories in name order, an empty assignment resetting a list)
// but needs no running systemd: packages are often installed and checked
// before the service manager has loaded them.
package sdunit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sallyport/sallyport/internal/userfile"
)

// DefaultPath is the system unit search path, highest priority first (the
// admin's /etc, runtime units, then the vendor directories, Debian's /lib
// last).
var DefaultPath = []string{
	"/etc/systemd/system",
	"/run/systemd/system",
	"/usr/local/lib/systemd/system",
	"/usr/lib/systemd/system",
	"/lib/systemd/system",
}

// SearchPath is the unit search path: $SYSTEMD_UNIT_PATH (colon separated;
// a trailing colon appends DefaultPath), as systemd reads it, or
// DefaultPath.
func SearchPath() []string {
	env := os.Getenv("SYSTEMD_UNIT_PATH")
	if env == "" {
		return DefaultPath
	}
	var out []string
	for _, d := range strings.Split(strings.TrimSuffix(env, ":"), ":") {
		if d != "" {
			out = append(out, d)
		}
	}
	if strings.HasSuffix(env, ":") {
		out = append(out, DefaultPath...)
	}
	return out
}

// Unit is what a service unit says about how its process runs.
type Unit struct {
	Name    string   // e.g. "sallyport-server.service"
	Path    string   // the unit file in force
	DropIns []string // its drop-ins, in the order applied

	User                string   // User= ("" = root)
	Group               string   // Group= ("" = the user's group)
	SupplementaryGroups []string // SupplementaryGroups=
	// Credentials maps LoadCredential= IDs to the file systemd reads them
	// from (as root, at start) ("" when the source is the service
	// manager's own credential of that name).
	Credentials map[string]string
	// EncryptedCredentials lists LoadCredentialEncrypted= IDs, which only
	// systemd can decrypt.
	EncryptedCredentials []string
	ProtectHome          string   // ProtectHome= ("", "yes", "read-only", "tmpfs")
	PrivateTmp           bool     // PrivateTmp=
	InaccessiblePaths    []string // InaccessiblePaths=
	ExecStart            []string // argv of the (last) ExecStart=, prefixes stripped
	// StateDirectory lists StateDirectory= names (under /var/lib), which
	// systemd creates and hands to the unit's user at start.
	StateDirectory []string
}

// CredentialsDir is where systemd puts the unit's credentials
// ($CREDENTIALS_DIRECTORY of its processes).
func (u *Unit) CredentialsDir() string { return "/run/credentials/" + u.Name }

// Flag returns the value of a command-line flag of ExecStart ("-c FILE",
// "-c=FILE", "--config FILE", "--config=FILE"), and whether it was given.
func (u *Unit) Flag(names ...string) (string, bool) {
	args := u.ExecStart
	for i, a := range args {
		for _, n := range names {
			if a == n && i+1 < len(args) {
				return args[i+1], true
			}
			if v, ok := strings.CutPrefix(a, n+"="); ok {
				return v, true
			}
		}
	}
	return "", false
}

// Hidden reports why the unit's process cannot see path ("" when nothing in
// its sandbox hides it): ProtectHome= hides /home, /root and /run/user;
// PrivateTmp= gives it its own /tmp and /var/tmp; InaccessiblePaths= hides
// what it lists.
func (u *Unit) Hidden(path string) string {
	under := func(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	path = filepath.Clean(path)
	if u.ProtectHome == "yes" || u.ProtectHome == "tmpfs" {
		for _, d := range []string{"/home", "/root", "/run/user"} {
			if under(path, d) {
				return "ProtectHome=" + u.ProtectHome + " hides " + d + " from it"
			}
		}
	}
	if u.PrivateTmp {
		for _, d := range []string{"/tmp", "/var/tmp"} {
			if under(path, d) {
				return "PrivateTmp=yes gives it an empty " + d + " of its own"
			}
		}
	}
	for _, d := range u.InaccessiblePaths {
		if d = strings.TrimLeft(d, "-+"); d != "" && under(path, filepath.Clean(d)) {
			return "InaccessiblePaths= hides " + d + " from it"
		}
	}
	return ""
}

// ErrNotFound means no unit file of that name is on the search path.
var ErrNotFound = errors.New("unit not found")

// Load finds the unit name on SearchPath and applies its drop-ins
// (NAME.d/*.conf from every directory of the path; a file name found in a
// higher-priority directory masks the same name lower down).
func Load(name string) (*Unit, error) {
	dirs := SearchPath()
	u := &Unit{Name: name}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			u.Path = p
			break
		}
	}
	if u.Path == "" {
		return nil, fmt.Errorf("%s: %w in %s", name, ErrNotFound, strings.Join(dirs, ", "))
	}
	dropins := map[string]string{} // file name -> path of highest priority
	for _, d := range dirs {
		matches, _ := filepath.Glob(filepath.Join(d, name+".d", "*.conf"))
		for _, m := range matches {
			if _, seen := dropins[filepath.Base(m)]; !seen {
				dropins[filepath.Base(m)] = m
			}
		}
	}
	names := make([]string, 0, len(dropins))
	for n := range dropins {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		u.DropIns = append(u.DropIns, dropins[n])
	}
	for _, f := range append([]string{u.Path}, u.DropIns...) {
		if err := u.apply(f); err != nil {
			return nil, err
		}
	}
	return u, nil
}

// apply reads one unit file or drop-in over u. Only [Service] settings are
// read; an empty assignment resets a list, as in systemd.
func (u *Unit) apply(path string) error {
	b, err := userfile.Read(path, userfile.MaxConfig)
	if err != nil {
		return fmt.Errorf("read unit %s: %w", path, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	section, cont := "", ""
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cont != "" {
			line = cont + " " + line
			cont = ""
		}
		if strings.HasSuffix(line, `\`) {
			cont = strings.TrimSuffix(line, `\`)
			continue
		}
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			section = strings.Trim(line, "[]")
			continue
		}
		if section != "Service" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		u.set(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read unit %s: %w", path, err)
	}
	return nil
}

func (u *Unit) set(k, v string) {
	switch k {
	case "User":
		u.User = v
	case "Group":
		u.Group = v
	case "SupplementaryGroups":
		if v == "" {
			u.SupplementaryGroups = nil
		}
		u.SupplementaryGroups = append(u.SupplementaryGroups, strings.Fields(v)...)
	case "LoadCredential":
		if v == "" {
			u.Credentials = nil
			return
		}
		if u.Credentials == nil {
			u.Credentials = map[string]string{}
		}
		id, src, _ := strings.Cut(v, ":")
		u.Credentials[id] = src
	case "LoadCredentialEncrypted":
		if v == "" {
			u.EncryptedCredentials = nil
			return
		}
		id, _, _ := strings.Cut(v, ":")
		u.EncryptedCredentials = append(u.EncryptedCredentials, id)
	case "ProtectHome":
		switch v {
		case "yes", "true", "on", "1":
			u.ProtectHome = "yes"
		case "read-only", "tmpfs":
			u.ProtectHome = v
		default:
			u.ProtectHome = ""
		}
	case "PrivateTmp":
		u.PrivateTmp = v == "yes" || v == "true" || v == "on" || v == "1"
	case "InaccessiblePaths":
		if v == "" {
			u.InaccessiblePaths = nil
		}
		u.InaccessiblePaths = append(u.InaccessiblePaths, strings.Fields(v)...)
	case "StateDirectory":
		if v == "" {
			u.StateDirectory = nil
		}
		for _, f := range strings.Fields(v) {
			name, _, _ := strings.Cut(f, ":") // NAME[:SYMLINK]
			u.StateDirectory = append(u.StateDirectory, name)
		}
	case "ExecStart":
		if v == "" {
			u.ExecStart = nil
			return
		}
		u.ExecStart = splitArgs(strings.TrimLeft(v, "-@:+!"))
	}
}

// splitArgs splits a command line at white space, honouring double and
// single quotes (systemd's quoting, without its escapes and specifiers).
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	in, quote := false, rune(0)
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote == 0 && (r == '"' || r == '\''):
			quote, in = r, true
		case quote == 0 && (r == ' ' || r == '\t'):
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}
