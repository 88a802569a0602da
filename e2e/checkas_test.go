package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestServerCheckAsUnitUser: `server check`, run as root on the config the
// gateway's unit runs, reads the files again as the unit's User= (nobody
// here, from a unit found through $SYSTEMD_UNIT_PATH): a PKI the user
// cannot enter fails with the chgrp/chmod that fixes it; after those
// fixes, with the key handed over by LoadCredential= (delivered as systemd
// would: a copy only the user may read), it passes; a sandbox setting that
// hides the files (PrivateTmp=) fails naming it; --as root checks as root
// only.
func TestServerCheckAsUnitUser(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	if nobodyBin == "" {
		t.Fatal("no copy of the binary for nobody (TestMain runs as root and makes it)")
	}
	home := shortTempDir(t)
	etc, units := filepath.Join(home, "etc"), filepath.Join(home, "units")
	for _, d := range []string{etc, units} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "chgrp", "nogroup", etc) // the gateway's directory, as the package makes /etc/sallyport
	run(t, "chmod", "0750", etc)
	pkiDir := filepath.Join(etc, "pki")
	run(t, nobodyBin, "pki", "init", "--dir", pkiDir, "--key", "ed25519")
	run(t, nobodyBin, "pki", "server", "--dir", pkiDir, "--name", gwName, "--key", "ed25519")
	conf := filepath.Join(etc, "server.toml")
	cred := "/run/credentials/sallyport-server.service/server.key"
	writeConf := func(key string) {
		text := `listen = "127.0.0.1:8443"
[tls]
cert = "pki/servers/` + gwName + `.crt"
key = "` + key + `"
client_ca = "pki/ca.crt"
crl = "pki/crl.pem"
[tunnel]
ipv4_pool = "10.8.0.0/24"
lease_file = "` + filepath.Join(home, "state", "leases.json") + `"
[[policy]]
name = "all"
match = { cn = ["*"] }
allow = ["10.0.0.0/8"]
`
		if err := os.WriteFile(conf, []byte(text), 0o640); err != nil {
			t.Fatal(err)
		}
		run(t, "chgrp", "nogroup", conf)
	}
	writeConf("pki/servers/" + gwName + ".key")
	// StateDirectory= as the real unit has it: the lease file's directory
	// is systemd's to make and hand over, whatever is there now.
	unit := "[Service]\nUser=nobody\nGroup=nogroup\nStateDirectory=sallyport\nExecStart=" + nobodyBin + " server -c " + conf + "\n"
	if err := os.WriteFile(filepath.Join(units, "sallyport-server.service"), []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	check := func(args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(nobodyBin, append([]string{"server", "check", "-c", conf}, args...)...)
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+units)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}

	out, code := check()
	for _, want := range []string{
		"as user nobody (User= of " + units,
		"permission denied",
		"fix: " + pkiDir + " is root:root 0700, so user nobody cannot enter it: chgrp nogroup " + pkiDir + " && chmod 0750 " + pkiDir,
		"chgrp nogroup " + filepath.Join(pkiDir, "servers") + " && chmod 0750",
		"chgrp sallyport " + filepath.Join(pkiDir, "servers", gwName+".key") + " && chmod 0640",
	} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("private PKI: exit %d, want 1 with %q:\n%s", code, want, out)
		}
	}
	// The admin in the config's directory, naming it as "server.toml":
	// the same files, the same fixes.
	cmd := exec.Command(nobodyBin, "server", "check", "-c", "server.toml")
	cmd.Dir, cmd.Env = etc, append(os.Environ(), "SYSTEMD_UNIT_PATH="+units)
	if rel, _ := cmd.CombinedOutput(); !strings.Contains(string(rel), "fix: "+pkiDir+" is root:root 0700") || strings.Contains(string(rel), "no such file") {
		t.Errorf("private PKI, config named relative to the admin's directory:\n%s", rel)
	}
	if out, code := check("--as", "root"); code != 0 || strings.Contains(out, "as user") {
		t.Errorf("--as root: exit %d, want 0 without a second pass:\n%s", code, out)
	}

	// The admin applies the directory fixes and hands the key over as a
	// credential (it stays root 0600).
	for _, d := range []string{pkiDir, filepath.Join(pkiDir, "servers")} {
		run(t, "chgrp", "nogroup", d)
		run(t, "chmod", "0750", d)
	}
	writeConf(cred)
	if out, code := check(); code != 1 || !strings.Contains(out, "LoadCredential=server.key:FILE") {
		t.Errorf("credential the unit does not load: exit %d\n%s", code, out)
	}
	dropin := filepath.Join(units, "sallyport-server.service.d")
	if err := os.MkdirAll(dropin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dropin, "override.conf"),
		[]byte("[Service]\nLoadCredential=server.key:"+filepath.Join(pkiDir, "servers", gwName+".key")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := check(); code != 0 || !strings.Contains(out, "files read as user nobody") {
		t.Errorf("shared directories, key as a credential: exit %d, want 0 read as nobody:\n%s", code, out)
	}
	// A sandbox that hides the files: the unit's own /tmp.
	if err := os.WriteFile(filepath.Join(dropin, "tmp.conf"), []byte("[Service]\nPrivateTmp=yes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := check(); code != 1 || !strings.Contains(out, "PrivateTmp=yes") {
		t.Errorf("files under a PrivateTmp unit's /tmp: exit %d\n%s", code, out)
	}
}
