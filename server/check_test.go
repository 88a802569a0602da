package server

import (
	"fmt"
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

// TestCheckErrorsAtTheirLine: what the config loader cannot check alone
// (policies, allowlists, static devices by fingerprint: checked when the
// trust is built) is put at the line of the key, in the [[policy]] or
// [[device]] it belongs to, as the loader's own errors are.
func TestCheckErrorsAtTheirLine(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	path := h.s.config().Path
	second := "\n[[policy]]\nname = \"ops\"\nmatch = { ou = [\"ops\"] }\nallow = [\"10.1.0.0/16\"]\n"
	for _, tc := range []struct {
		name, extra, at, want string
	}{
		{"allow rule", engPolicyTOML + strings.Replace(second, "10.1.0.0/16", "10.1.0.0/16 tcp/99999", 1),
			"tcp/99999", `[[policy]] #2 "ops": allow "10.1.0.0/16 tcp/99999": bad port`},
		{"route", engPolicyTOML + strings.Replace(second, "allow =", "routes = [\"10.1.0.0/33\"]\nallow =", 1),
			"routes =", `[[policy]] #2 "ops": routes "10.1.0.0/33"`},
		{"dns", engPolicyTOML + strings.Replace(second, "allow =", "dns = [\"1.2.3\"]\nallow =", 1),
			"dns =", `[[policy]] #2 "ops": dns "1.2.3"`},
		{"match value", engPolicyTOML + strings.Replace(second, `ou = ["ops"]`, `ou = ["[x"]`, 1),
			`ou = ["[x"]`, `[[policy]] #2 "ops": match.ou "[x": bad glob`},
		{"match empty", engPolicyTOML + strings.Replace(second, `ou = ["ops"]`, ``, 1),
			"match = {", `[[policy]] #2 "ops": match selects nothing`},
		{"duplicate name", engPolicyTOML + strings.Replace(second, `"ops"`, `"eng"`, 1),
			`name = "eng"`, `[[policy]] #2 "eng": duplicate name`},
		{"allowed subjects", "allow_subjects = [\"CN=[x\"]\n" + engPolicyTOML,
			"allow_subjects", `key "tls.allow_subjects": bad pattern "CN=[x"`},
		{"allowed fingerprints", "allow_fingerprints = [\"zz\"]\n" + engPolicyTOML,
			"allow_fingerprints", `key "tls.allow_fingerprints": fingerprint "zz"`},
		{"static device fingerprint", engPolicyTOML + "\n[[device]]\nfingerprint = \"zz\"\nipv4 = \"10.8.0.9\"\n",
			`fingerprint = "zz"`, `[[device]] #1: key "fingerprint": "zz"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The error belongs on the line of the last place tc.at is
			// written (the second policy's, when both have it).
			text := harnessTOML(tc.extra)
			i := strings.LastIndex(text, tc.at)
			if i < 0 {
				t.Fatalf("%q not in the config", tc.at)
			}
			line := strings.Count(text[:i], "\n") + 1
			writeFile(t, path, text)
			_, err := Check(path)
			want := fmt.Sprintf("%s:%d: %s", path, line, tc.want)
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("check:\n%v\nwant it to begin:\n%s", err, want)
			}
		})
	}
}

// TestReloadNamesRestartKeys: a reload that changes keys only a restart
// applies names each one (table.key), once, and keeps its running value;
// the rest of the file is applied.
func TestReloadNamesRestartKeys(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	running := h.s.config()
	writeFile(t, running.Path, harnessTOML("handshake_timeout = \"7s\"\n"+engPolicyTOML+"\n[log]\nformat = \"json\"\n")+
		"mtu = 1400\nmasquerade = [\"eth9\"]\n"+fmt.Sprintf("lease_file = %q\n", running.Tunnel.LeaseFile)) // as it runs (the harness sets it)
	h.s.Reload("test")
	now := h.s.config()
	if now == running || now.TLS.HandshakeTimeout != 7*time.Second {
		t.Fatalf("the reload did not apply tls.handshake_timeout: %+v", now.TLS)
	}
	if now.Tunnel.MTU != running.Tunnel.MTU || len(now.Tunnel.Masquerade) != 0 || now.Log.Format != running.Log.Format {
		t.Errorf("a restart-only key changed in the running gateway: mtu %d, masquerade %v, log.format %q", now.Tunnel.MTU, now.Tunnel.Masquerade, now.Log.Format)
	}
	logs := h.logs.String()
	if want := `keys=tunnel.masquerade,tunnel.mtu,log.format`; !strings.Contains(logs, want) || strings.Count(logs, "apply only when the gateway restarts") != 1 {
		t.Errorf("the reload log does not name %s once:\n%s", want, logs)
	}
}
