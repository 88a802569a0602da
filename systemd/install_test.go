package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/testenv"
)

// TestInstallUninstallRoundTrip stages `make install` into a temporary
// DESTDIR for two prefixes and checks that the units name the binary under
// that prefix, that nothing lands in the admin's /etc/systemd, and that
// `make uninstall` leaves nothing behind.
func TestInstallUninstallRoundTrip(t *testing.T) {
	testenv.Command(t, "make")
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	// A stand-in binary: the test checks the layout, not the build.
	fake := filepath.Join(t.TempDir(), "sallyport")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, prefix := range []string{"/usr", "/usr/local", "/opt/sp"} {
		t.Run(prefix, func(t *testing.T) {
			dest := t.TempDir()
			args := []string{"-C", repo, "-o", "build", "BIN=" + fake, "DESTDIR=" + dest, "PREFIX=" + prefix,
				"UNITBUILD=" + t.TempDir()}
			if out, err := exec.Command("make", append(args, "install")...).CombinedOutput(); err != nil {
				t.Fatalf("make install: %v\n%s", err, out)
			}
			want := []string{
				prefix + "/bin/sallyport",
				prefix + "/lib/systemd/system/sallyport-server.service",
				prefix + "/lib/systemd/system/sallyport-client@.service",
				prefix + "/lib/sysctl.d/60-sallyport.conf",
				prefix + "/lib/sysusers.d/sallyport.conf",
				prefix + "/share/doc/sallyport/README.md",
				prefix + "/share/doc/sallyport/ARCHITECTURE.md",
				prefix + "/share/doc/sallyport/docs/admin-guide.md",
				prefix + "/share/doc/sallyport/docs/performance.md",
				prefix + "/share/doc/sallyport/examples/server.toml",
				prefix + "/share/doc/sallyport/examples/client.toml",
				prefix + "/share/man/man1/sallyport.1.gz",
				prefix + "/share/man/man1/sallyport-server-kick.1.gz",
				prefix + "/share/man/man5/sallyport-server.toml.5.gz",
				prefix + "/share/man/man5/sallyport-client.toml.5.gz",
				prefix + "/share/bash-completion/completions/sallyport",
				prefix + "/share/zsh/vendor-completions/_sallyport",
				prefix + "/share/fish/vendor_completions.d/sallyport.fish",
			}
			for _, f := range want {
				if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
					t.Errorf("make install did not put down %s: %v", f, err)
				}
			}
			if fi, err := os.Stat(filepath.Join(dest, "etc/sallyport")); err != nil || fi.Mode().Perm() != 0o750 {
				t.Errorf("/etc/sallyport: want a 0750 directory, got %v %v", fi, err)
			}
			if _, err := os.Stat(filepath.Join(dest, "etc/systemd")); err == nil {
				t.Errorf("make install wrote into /etc/systemd, the admin's override directory")
			}
			unit, _ := os.ReadFile(filepath.Join(dest, prefix, "lib/systemd/system/sallyport-server.service"))
			if !strings.Contains(string(unit), "\nExecStart="+prefix+"/bin/sallyport server ") {
				t.Errorf("server unit's ExecStart does not use PREFIX %s:\n%s", prefix, unit)
			}
			if strings.Contains(string(unit), "DIR@") {
				t.Errorf("server unit has an unexpanded template variable:\n%s", unit)
			}
			if out, err := exec.Command("make", append(args, "uninstall")...).CombinedOutput(); err != nil {
				t.Fatalf("make uninstall: %v\n%s", err, out)
			}
			var left []string
			filepath.WalkDir(dest, func(p string, d os.DirEntry, err error) error {
				if p != dest {
					left = append(left, strings.TrimPrefix(p, dest))
				}
				return nil
			})
			if len(left) > 0 {
				t.Errorf("make uninstall left behind: %s", strings.Join(left, " "))
			}
		})
	}
}
