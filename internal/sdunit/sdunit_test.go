package sdunit

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func write(t *testing.T, path, text string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

const vendorUnit = `[Unit]
Description=x
# User=not-this-one (a comment)
[Service]
ExecStart=/usr/bin/sallyport server -c /etc/sallyport/server.toml
User=sallyport
Group=sallyport
ProtectHome=yes
PrivateTmp=yes
LoadCredential=old:/nowhere
[Install]
User=ignored-outside-service
`

// TestLoad: the unit in force is the first on the search path; drop-ins of
// every directory apply in file-name order, a name in a higher directory
// masks the same name lower down, later settings win, and an empty
// assignment resets a list (as systemctl edit users write them).
func TestLoad(t *testing.T) {
	etc, lib := t.TempDir(), t.TempDir()
	t.Setenv("SYSTEMD_UNIT_PATH", etc+":"+lib)
	const name = "gw.service"
	write(t, filepath.Join(lib, name), vendorUnit)
	write(t, filepath.Join(lib, name+".d", "10-vendor.conf"), "[Service]\nSupplementaryGroups=adm\n")
	write(t, filepath.Join(lib, name+".d", "50-masked.conf"), "[Service]\nUser=masked\n")
	write(t, filepath.Join(etc, name+".d", "50-masked.conf"), "[Service]\nSupplementaryGroups=ops \\\n  audit\n")
	write(t, filepath.Join(etc, name+".d", "override.conf"), `[Service]
LoadCredential=
LoadCredential=server.key:/etc/sallyport/pki/servers/vpn.key
LoadCredentialEncrypted=token:/etc/creds/token.cred
ExecStart=
ExecStart=-/opt/sp/bin/sallyport server --config="/etc/sallyport/gw one.toml" --log-format json
InaccessiblePaths=-/srv/secret
StateDirectory=sallyport other:link
`)
	u, err := Load(name)
	if err != nil {
		t.Fatal(err)
	}
	if u.Path != filepath.Join(lib, name) {
		t.Errorf("path %s", u.Path)
	}
	wantDropIns := []string{filepath.Join(lib, name+".d", "10-vendor.conf"), filepath.Join(etc, name+".d", "50-masked.conf"), filepath.Join(etc, name+".d", "override.conf")}
	if !slices.Equal(u.DropIns, wantDropIns) {
		t.Errorf("drop-ins %v, want %v", u.DropIns, wantDropIns)
	}
	if u.User != "sallyport" || u.Group != "sallyport" {
		t.Errorf("user %q group %q", u.User, u.Group)
	}
	if !slices.Equal(u.SupplementaryGroups, []string{"adm", "ops", "audit"}) {
		t.Errorf("supplementary groups %v", u.SupplementaryGroups)
	}
	if len(u.Credentials) != 1 || u.Credentials["server.key"] != "/etc/sallyport/pki/servers/vpn.key" {
		t.Errorf("credentials %v (the empty LoadCredential= resets the list)", u.Credentials)
	}
	if !slices.Equal(u.EncryptedCredentials, []string{"token"}) {
		t.Errorf("encrypted credentials %v", u.EncryptedCredentials)
	}
	if c, ok := u.Flag("-c", "--config"); !ok || c != "/etc/sallyport/gw one.toml" {
		t.Errorf("config flag %q %v from %q", c, ok, u.ExecStart)
	}
	if u.ExecStart[0] != "/opt/sp/bin/sallyport" {
		t.Errorf("ExecStart %q: the - prefix is not part of the path", u.ExecStart)
	}
	if !slices.Equal(u.StateDirectory, []string{"sallyport", "other"}) {
		t.Errorf("state directories %v", u.StateDirectory)
	}
	if u.CredentialsDir() != "/run/credentials/gw.service" {
		t.Errorf("credentials dir %s", u.CredentialsDir())
	}
	for path, hidden := range map[string]bool{
		"/root/server.toml": true, "/home/admin/pki/ca.crt": true, "/tmp/x.crt": true, "/var/tmp/y": true,
		"/srv/secret/k": true, "/srv/secretive": false, "/etc/sallyport/server.toml": false, "/homework": false,
	} {
		if why := u.Hidden(path); (why != "") != hidden {
			t.Errorf("Hidden(%s) = %q, want hidden %v", path, why, hidden)
		}
	}
}

// TestLoadHigherMasks: a unit file in a higher directory replaces the
// vendor's whole (its settings do not merge), and a missing unit is
// ErrNotFound naming where it looked.
func TestLoadHigherMasks(t *testing.T) {
	etc, lib := t.TempDir(), t.TempDir()
	t.Setenv("SYSTEMD_UNIT_PATH", etc+":"+lib)
	write(t, filepath.Join(lib, "a.service"), vendorUnit)
	write(t, filepath.Join(etc, "a.service"), "[Service]\nExecStart=/bin/true\n")
	u, err := Load("a.service")
	if err != nil {
		t.Fatal(err)
	}
	if u.User != "" || u.ProtectHome != "" || u.Hidden("/root/x") != "" {
		t.Errorf("vendor settings leaked through a full override: %+v", u)
	}
	if _, err := Load("b.service"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing unit: %v", err)
	}
}

func TestSearchPath(t *testing.T) {
	t.Setenv("SYSTEMD_UNIT_PATH", "/a:/b:")
	if got := SearchPath(); !slices.Equal(got, append([]string{"/a", "/b"}, DefaultPath...)) {
		t.Errorf("trailing colon: %v", got)
	}
	t.Setenv("SYSTEMD_UNIT_PATH", "/a")
	if got := SearchPath(); !slices.Equal(got, []string{"/a"}) {
		t.Errorf("no trailing colon: %v", got)
	}
	t.Setenv("SYSTEMD_UNIT_PATH", "")
	if got := SearchPath(); !slices.Equal(got, DefaultPath) {
		t.Errorf("unset: %v", got)
	}
}
