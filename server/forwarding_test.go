package server

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// TestForwardingFixMatchesSysctlFile: the advice logged when forwarding is
// off must work with the sysctl.d file the package ships. It names the
// command for now, and to persist either the packaged file (only if that
// file really sets the key: its IPv6 line is commented out) or a drop-in of
// the admin's own in /etc/sysctl.d that sets the key.
func TestForwardingFixMatchesSysctlFile(t *testing.T) {
	f, err := os.Open("../systemd/60-sallyport.conf")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	active := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok {
			active[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	for _, tt := range []struct {
		v6  bool
		key string
	}{{false, "net.ipv4.ip_forward"}, {true, "net.ipv6.conf.all.forwarding"}} {
		fix := forwardingFix(tt.v6)
		if !strings.Contains(fix, "sysctl -w "+tt.key+"=1") {
			t.Errorf("%s: the fix does not give the command for now: %q", tt.key, fix)
		}
		switch {
		case strings.Contains(fix, "loads the packaged"):
			if active[tt.key] != "1" {
				t.Errorf("%s: the fix points at 60-sallyport.conf, which does not set it (set: %v): %q", tt.key, active, fix)
			}
		case !strings.Contains(fix, "/etc/sysctl.d/") || !strings.Contains(fix, tt.key+" = 1"):
			t.Errorf("%s: the fix names neither the packaged file nor a drop-in that sets it: %q", tt.key, fix)
		}
	}
}
