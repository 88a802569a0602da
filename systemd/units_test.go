// Package systemd holds the unit file templates (ExecStart follows the
// install prefix), the sysctl.d and sysusers.d drop-ins; these tests verify
// the units with systemd-analyze, check the directives the gateway and client
// rely on, and round-trip make install/uninstall.
package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/testenv"
)

func TestUnits(t *testing.T) {
	units := []struct {
		file  string
		caps  string
		extra []string
	}{
		{"sallyport-server.service", "CAP_NET_ADMIN CAP_NET_BIND_SERVICE", []string{
			"User=sallyport", "Group=sallyport", "RuntimeDirectory=sallyport", "StateDirectory=sallyport"}},
		// The laptop fails closed from the first second of a boot: its
		// unit is in place before the network is configured.
		// A TPM-held device key needs the TPM; a renewal rewrites the
		// profile and writes the next TPM key file in /etc/sallyport.
		{"sallyport-client@.service", "CAP_NET_ADMIN", []string{"StateDirectory=sallyport",
			"Wants=network-pre.target", "Before=network-pre.target", "After=nftables.service",
			"DeviceAllow=/dev/tpmrm0 rw", "ReadWritePaths=-/etc/sallyport"}},
	}
	required := []string{
		"Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "NoNewPrivileges=yes", "ProtectSystem=strict",
		"PrivateTmp=yes", "DeviceAllow=/dev/net/tun rw", "DevicePolicy=closed",
	}
	for _, u := range units {
		t.Run(u.file, func(t *testing.T) {
			b, err := os.ReadFile(u.file + ".in")
			if err != nil {
				t.Fatal(err)
			}
			text := string(b)
			if !strings.Contains(text, "ExecStart=@BINDIR@/sallyport ") {
				t.Errorf("%s: ExecStart does not follow the install prefix (@BINDIR@)", u.file)
			}
			for _, r := range append(append(required, u.extra...), "CapabilityBoundingSet="+u.caps, "AmbientCapabilities="+u.caps) {
				if !strings.Contains(text, "\n"+r+"\n") {
					t.Errorf("%s lacks %q", u.file, r)
				}
			}
			if strings.HasPrefix(u.file, "sallyport-client") && strings.Contains(text, "network-online") {
				t.Errorf("%s waits for network-online.target: what the laptop sends until it starts leaves in the clear", u.file)
			}
			verify(t, u.file, text)
		})
	}
}

// verify runs systemd-analyze verify on a copy whose ExecStart points at a
// binary that exists here (the real one is only there after make install).
func verify(t *testing.T, name, text string) {
	sa := testenv.Command(t, "systemd-analyze")
	bin := os.Getenv("SALLYPORT_BIN")
	if bin == "" {
		bin = "/bin/true"
	}
	dir := t.TempDir()
	unit := name
	if strings.HasSuffix(name, "@.service") {
		unit = strings.TrimSuffix(name, "@.service") + "@test.service"
	}
	text = strings.ReplaceAll(text, "@BINDIR@/sallyport", bin)
	text = strings.ReplaceAll(text, "@DOCDIR@", "/usr/share/doc/sallyport")
	if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sa, "verify", "--man=no", filepath.Join(dir, unit))
	if strings.HasSuffix(name, "@.service") {
		// An instance is verified through a link named after it.
		if err := os.Symlink(filepath.Join(dir, name), filepath.Join(dir, unit)); err != nil {
			t.Fatal(err)
		}
	}
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=warning")
	out, err := cmd.CombinedOutput()
	// Messages about the host's other units are not ours to fix.
	var ours []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "sallyport") {
			ours = append(ours, line)
		}
	}
	if err != nil || len(ours) > 0 {
		t.Fatalf("systemd-analyze verify %s: %v\n%s", name, err, out)
	}
}

// TestServerFileLimit guards the gateway's open-file limit: every session is
// a socket, so the default soft limit of 1024 caps the fleet near 1,000.
func TestServerFileLimit(t *testing.T) {
	b, err := os.ReadFile("sallyport-server.service.in")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\nLimitNOFILE=1048576\n") {
		t.Error("sallyport-server.service lacks LimitNOFILE=1048576")
	}
}
