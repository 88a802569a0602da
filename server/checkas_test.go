package server

import (
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/sdunit"
)

// TestAccessFix: the fix names every directory or file on the way that
// keeps the gateway's user out, with the command that lets it in: a chgrp
// into the user's group for a directory of the gateway's own, chmod g+x
// where the group is already right, the 0640-in-sallyport sharing for the
// key, and no chgrp of a system or home directory.
func TestAccessFix(t *testing.T) {
	const uid, gid, other = 999, 995, 4242
	files := map[string]fileStat{
		"/":                        {fs.ModeDir | 0o755, 0, 0},
		"/etc":                     {fs.ModeDir | 0o755, 0, 0},
		"/etc/sallyport":           {fs.ModeDir | 0o750, 0, gid},
		"/etc/sallyport/pki":       {fs.ModeDir | 0o700, 0, 0},
		"/etc/sallyport/pki/k.key": {0o600, 0, 0},
		"/etc/sallyport/pki/c.crt": {0o644, 0, 0},
		"/etc/sallyport/grp":       {fs.ModeDir | 0o740, 0, gid},
		"/etc/sallyport/grp/c.crt": {0o640, 0, other},
		"/etc/sallyport/ok":        {fs.ModeDir | 0o750, 0, gid},
		"/etc/sallyport/ok/k.key":  {0o640, 0, gid},
		"/etc/sallyport/own.crt":   {0o600, uid, 0},
		"/root":                    {fs.ModeDir | 0o700, 0, 0},
		"/root/gw":                 {fs.ModeDir | 0o755, 0, 0},
		"/root/gw/c.crt":           {0o644, 0, 0},
		"/srv/vpn":                 {fs.ModeDir | 0o700, 0, 0},
		"/srv":                     {fs.ModeDir | 0o755, 0, 0},
		"/srv/vpn/c.crt":           {0o644, 0, 0},
	}
	stat := func(p string) (fileStat, error) {
		if st, ok := files[p]; ok {
			return st, nil
		}
		return fileStat{}, fs.ErrNotExist
	}
	n := names{
		user:  func(id int) string { return map[int]string{0: "root", uid: "sallyport"}[id] },
		group: func(id int) string { return map[int]string{0: "root", gid: "sallyport", other: "other"}[id] },
	}
	r := &RunAs{User: "sallyport", UID: uid, GID: gid}
	for _, tt := range []struct {
		path, configDir string
		key             bool
		want            []string
	}{
		{"/etc/sallyport/pki/k.key", "/etc/sallyport", true, []string{
			"/etc/sallyport/pki is root:root 0700, so user sallyport cannot enter it: chgrp sallyport /etc/sallyport/pki && chmod 0750 /etc/sallyport/pki",
			"/etc/sallyport/pki/k.key is root:root 0600, so user sallyport cannot read it: chgrp sallyport /etc/sallyport/pki/k.key && chmod 0640 /etc/sallyport/pki/k.key (or hand it over with LoadCredential=",
		}},
		{"/etc/sallyport/pki/c.crt", "/etc/sallyport", false, []string{"chgrp sallyport /etc/sallyport/pki && chmod 0750"}},
		{"/etc/sallyport/grp/c.crt", "/etc/sallyport", false, []string{
			"/etc/sallyport/grp is root:sallyport 0740, so user sallyport cannot enter it: chmod g+x /etc/sallyport/grp",
			"/etc/sallyport/grp/c.crt is root:other 0640, so user sallyport cannot read it: chgrp sallyport /etc/sallyport/grp/c.crt && chmod g+r",
		}},
		{"/etc/sallyport/ok/k.key", "/etc/sallyport", true, nil},
		{"/etc/sallyport/own.crt", "/etc/sallyport", false, nil},
		{"/root/gw/c.crt", "/root/gw", false, []string{"/root is root:root 0700, so user sallyport cannot enter it: keep the gateway's files under /etc/sallyport"}},
		{"/srv/vpn/c.crt", "/srv/vpn", false, []string{"/srv/vpn is root:root 0700, so user sallyport cannot enter it: chgrp sallyport /srv/vpn && chmod 0750 /srv/vpn"}},
		{"/srv/vpn/c.crt", "/etc/sallyport", false, []string{"keep the gateway's files under /etc/sallyport"}},
	} {
		got := accessFix(tt.path, tt.configDir, r, tt.key, stat, n)
		if len(got) != len(tt.want) {
			t.Errorf("%s: %d fixes %q, want %d %q", tt.path, len(got), got, len(tt.want), tt.want)
			continue
		}
		for i := range got {
			if !strings.Contains(got[i], tt.want[i]) {
				t.Errorf("%s: fix %d\n got %q\nwant %q...", tt.path, i, got[i], tt.want[i])
			}
		}
	}
}

func writeUnit(t *testing.T, text string) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("SYSTEMD_UNIT_PATH", dir)
	if err := os.WriteFile(filepath.Join(dir, UnitName), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCheckUser: who `server check` reads the files as. As root on the
// config the unit runs: the unit's User=. On any other config, or not as
// root: nobody else. --as needs root; --as root means root only.
func TestCheckUser(t *testing.T) {
	if _, err := lookupUser("nobody", nil); err != nil {
		t.Skipf("no user nobody here: %v", err)
	}
	dir := t.TempDir()
	conf, other := filepath.Join(dir, "server.toml"), filepath.Join(dir, "other.toml")
	writeUnit(t, "[Service]\nUser=nobody\nExecStart=/usr/bin/sallyport server -c "+conf+"\n")
	for _, tt := range []struct {
		config, as string
		euid       int
		user, err  string
		note       bool
	}{
		{conf, "auto", 0, "nobody", "", false},
		{other, "auto", 0, "", "", true},
		{conf, "auto", 1000, "", "", false},
		{conf, "root", 0, "", "", false},
		{other, "nobody", 0, "nobody", "", false},
		{conf, "nobody", 1000, "", "needs root", false},
		{conf, "no-such-user-sallyport", 0, "", "no-such-user-sallyport", false},
	} {
		r, note, err := CheckUser(tt.config, tt.as, tt.euid)
		name := tt.config + " --as " + tt.as + " euid " + strconv.Itoa(tt.euid)
		switch {
		case tt.err != "":
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: err %v, want %q", name, err, tt.err)
			}
		case err != nil:
			t.Errorf("%s: %v", name, err)
		case tt.user == "" && r != nil:
			t.Errorf("%s: checks as %s, want the caller only", name, r.User)
		case tt.user != "" && (r == nil || r.User != tt.user || r.Unit == nil):
			t.Errorf("%s: %+v, want %s with the unit", name, r, tt.user)
		case (note != "") != tt.note:
			t.Errorf("%s: note %q", name, note)
		}
	}
	r, _, _ := CheckUser(conf, "auto", 0)
	if r == nil || !strings.Contains(r.From, "User= of ") {
		t.Errorf("the check does not say where the user came from: %+v", r)
	}
}

// TestCredentialSources: a file the config names in the unit's
// credentials directory is checked at its LoadCredential= source; one the
// unit does not load, or another unit's credential, is an error naming the
// fix; without a unit, files are read where they are.
func TestCredentialSources(t *testing.T) {
	u := &sdunit.Unit{Name: UnitName, Credentials: map[string]string{"server.key": "/etc/sallyport/pki/servers/gw.key"}, EncryptedCredentials: []string{"enc.key"}}
	cfg := &Config{Path: "/etc/sallyport/server.toml", TLS: TLSConfig{Cert: "/etc/sallyport/gw.crt", Key: "/run/credentials/" + UnitName + "/server.key", ClientCA: "/etc/sallyport/ca.crt"}}
	got, err := credentialSources(cfg, u)
	if err != nil || len(got) != 1 || got[cfg.TLS.Key] != "/etc/sallyport/pki/servers/gw.key" {
		t.Errorf("mapped: %v %v", got, err)
	}
	for _, tt := range []struct{ key, want string }{
		{"/run/credentials/" + UnitName + "/other.key", "LoadCredential=other.key:FILE with systemctl edit sallyport-server"},
		{"/run/credentials/foo.service/server.key", "not of " + UnitName},
		{"/run/credentials/" + UnitName + "/enc.key", ""},
	} {
		c := *cfg
		c.TLS.Key = tt.key
		_, err := credentialSources(&c, u)
		if (tt.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.key, err, tt.want)
		}
	}
	if got, err := credentialSources(cfg, nil); err != nil || len(got) != 0 {
		t.Errorf("no unit: %v %v", got, err)
	}
}

// TestHiddenFiles: a file the unit's sandbox hides from the gateway is an
// error naming the setting, except a credential (systemd delivers it).
func TestHiddenFiles(t *testing.T) {
	u := &sdunit.Unit{Name: UnitName, ProtectHome: "yes", PrivateTmp: true}
	cfg := &Config{Path: "/etc/sallyport/server.toml", TLS: TLSConfig{Cert: "/root/gw.crt", Key: "/run/credentials/" + UnitName + "/k", ClientCA: "/tmp/ca.crt"}}
	err := hiddenFiles(cfg, u)
	if err == nil || !strings.Contains(err.Error(), "tls.cert /root/gw.crt") || !strings.Contains(err.Error(), "ProtectHome=yes") ||
		!strings.Contains(err.Error(), "tls.client_ca /tmp/ca.crt") || !strings.Contains(err.Error(), "PrivateTmp=yes") {
		t.Errorf("hidden files: %v", err)
	}
	cfg.TLS.Cert, cfg.TLS.ClientCA = "/etc/sallyport/gw.crt", "/etc/sallyport/ca.crt"
	if err := hiddenFiles(cfg, u); err != nil {
		t.Errorf("nothing hidden: %v", err)
	}
}

// TestStateFiles: the lease file and renewal record in the unit's
// StateDirectory= are checked in the second pass's own empty copy of it
// (systemd makes the real one the user's at start); files elsewhere are
// left as they are.
func TestStateFiles(t *testing.T) {
	u := &sdunit.Unit{Name: UnitName, StateDirectory: []string{"sallyport"}}
	c := &Config{}
	c.Tunnel.LeaseFile = "/var/lib/sallyport/leases.json"
	c.Renewal.Record = "/srv/records/renewals.jsonl"
	got := stateFiles(c, u, "/tmp/emu")
	if len(got) != 1 || got["/var/lib/sallyport/leases.json"] != "/tmp/emu/sallyport/leases.json" {
		t.Errorf("state files %v", got)
	}
	c.Tunnel.LeaseFile = "/var/lib/sallyportx/leases.json"
	if got := stateFiles(c, u, "/tmp/emu"); len(got) != 0 {
		t.Errorf("a sibling directory mapped: %v", got)
	}
	if got := stateFiles(c, nil, "/tmp/emu"); len(got) != 0 {
		t.Errorf("no unit: %v", got)
	}
}
