package server

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCheck: server check loads everything a start loads and names what
// is wrong; a reload that fails the same check keeps the running
// configuration.
func TestCheck(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	h.writeCRL(3, time.Now().Add(-time.Minute)) // stale
	h.reload("crl = \"crl.pem\"\n" + engPolicyTOML)
	path := h.s.config().Path
	r, err := Check(path)
	if err != nil {
		t.Fatal(err)
	}
	if r.Policies != 1 || r.CAs != 1 || !strings.Contains(r.CRL, "number 3") || !strings.Contains(strings.Join(r.Warnings, "\n"), "CRL "+filepath.Join(h.dir(), "crl.pem")+" is stale") {
		t.Fatalf("check result %+v", r)
	}
	dir := h.dir()
	for _, tc := range []struct {
		name   string
		break_ func()
		want   string
	}{
		{"key readable by others", func() { os.Chmod(filepath.Join(dir, "gw.key"), 0o644) }, "tls.key"},
		{"CA file gone", func() { os.Rename(filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.old")) }, "client_ca"},
		{"CRL not PEM", func() { writeFile(t, filepath.Join(dir, "crl.pem"), "junk") }, "tls.crl"},
		{"bad allow rule", func() {
			writeFile(t, path, harnessTOML("crl = \"crl.pem\"\n"+strings.Replace(engPolicyTOML, "udp/53", "udp/99999", 1)))
		}, "99999"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.reload("crl = \"crl.pem\"\n" + engPolicyTOML) // good files again
			os.Chmod(filepath.Join(dir, "gw.key"), 0o600)
			os.Rename(filepath.Join(dir, "ca.old"), filepath.Join(dir, "ca.crt"))
			h.writeCRL(3, time.Now().Add(time.Hour))
			if _, err := Check(path); err != nil {
				t.Fatalf("good files: %v", err)
			}
			tc.break_()
			if _, err := Check(path); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("check: %v, want an error naming %q", err, tc.want)
			}
			before := h.s.config()
			h.s.Reload("test")
			if h.s.config() != before {
				t.Fatal("a reload that fails the check replaced the running configuration")
			}
		})
	}
}
