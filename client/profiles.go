package client

// Profiles, as wg-quick has interfaces: `sallyport up acme` reads
// /etc/sallyport/acme.toml, and the running clients are found by their
// admin sockets in /run/sallyport. Both directories follow systemd's
// ConfigurationDirectory= and RuntimeDirectory= ($CONFIGURATION_DIRECTORY,
// $RUNTIME_DIRECTORY), so a test or a unit can give its own.

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// ConfigDir holds the profiles: the first directory of
// $CONFIGURATION_DIRECTORY, else /etc/sallyport.
func ConfigDir() string { return envDir("CONFIGURATION_DIRECTORY", "/etc/sallyport") }

// Profile names a client config after its file: /etc/sallyport/acme.toml
// is "acme".
func Profile(path string) string {
	if path == "" {
		return ""
	}
	return strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
}

// validProfile is what a profile may be called (wg-quick's interface names,
// without their length limit).
var validProfile = regexp.MustCompile(`^[A-Za-z0-9_=+.-]+$`)

// ProfilePath is the file of profile arg: arg itself when it is a path
// (it has a slash or ends in .toml, as wg-quick takes a file), else
// ConfigDir/arg.toml. It checks the name, not that the file exists.
func ProfilePath(arg string) (string, error) {
	if strings.Contains(arg, "/") || strings.HasSuffix(arg, ".toml") {
		return arg, nil
	}
	if !validProfile.MatchString(arg) || arg == "." || arg == ".." {
		return "", fmt.Errorf("%q is not a profile name (letters, digits and _=+.- ; or give a file path)", arg)
	}
	return filepath.Join(ConfigDir(), arg+".toml"), nil
}

// Profiles lists the profiles in ConfigDir, by name: its *.toml files but
// the gateway's server.toml.
func Profiles() []string {
	files, _ := filepath.Glob(filepath.Join(ConfigDir(), "*.toml"))
	var names []string
	for _, f := range files {
		if filepath.Base(f) != "server.toml" {
			names = append(names, Profile(f))
		}
	}
	slices.Sort(names)
	return names
}

// NoProfileError is a profile whose file does not exist.
type NoProfileError struct{ Name, Path string }

func (e *NoProfileError) Error() string {
	msg := fmt.Sprintf("no profile %q: %s does not exist", e.Name, e.Path)
	if have := Profiles(); len(have) > 0 {
		msg += " (profiles in " + ConfigDir() + ": " + strings.Join(have, ", ") + ")"
	} else {
		msg += " (no profiles in " + ConfigDir() + " yet: install one made by `sallyport pki bundle` there, mode 0600)"
	}
	return msg
}

// LoadProfile loads profile arg (a name or a path, see ProfilePath).
func LoadProfile(arg string) (*Config, error) {
	path, err := ProfilePath(arg)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) && !strings.Contains(arg, "/") && !strings.HasSuffix(arg, ".toml") {
		return nil, &NoProfileError{Name: arg, Path: path}
	}
	return LoadConfig(path)
}
