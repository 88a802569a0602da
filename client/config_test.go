package client

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigParses(t *testing.T) {
	c, err := LoadConfig("../configs/client.toml")
	if err != nil {
		t.Fatal(err)
	}
	// As a bundle: no device (the first free spN), the socket after the
	// profile (the file's name), so two profiles made from it never clash.
	if len(c.Servers) != 1 || c.ServerName != "vpn.example.com" || c.Tunnel.Device != AutoDevice || c.Admin.Socket != DefaultSocket("client") || !c.Tunnel.tableAuto {
		t.Fatalf("unexpected example config: %+v", c)
	}
}

func TestConfigErrors(t *testing.T) {
	base := "server = \"gw.test:8443\"\n[tls]\nca = \"ca.crt\"\ncert = \"d.crt\"\nkey = \"d.key\"\n"
	tests := []struct{ name, text, want string }{
		{"ok", base, ""},
		{"no server", strings.Replace(base, `server = "gw.test:8443"`, "", 1), `"server" is required`},
		{"server without port", strings.Replace(base, "gw.test:8443", "gw.test", 1), `"server"`},
		{"both server and servers", base[:0] + "servers = [\"a:1\"]\n" + base, "not both"},
		{"ca twice", strings.Replace(base, "[tls]\n", "[tls]\nca_pem = \"x\"\n", 1), `exactly one of "tls.ca"`},
		{"no key", strings.Replace(base, "key = \"d.key\"\n", "", 1), `"tls.key"`},
		{"key and key_tpm", base + "key_tpm = \"d.tpmkey\"\n", `exactly one of "tls.key"`},
		{"key_tpm and key_pkcs11", strings.Replace(base, "key = \"d.key\"\n", "key_tpm = \"d.tpmkey\"\nkey_pkcs11 = \"pkcs11:token=a;object=b?module-path=/m.so\"\n", 1), `exactly one of "tls.key"`},
		{"tpm_device alone", base + "tpm_device = \"/dev/tpmrm0\"\n", `"tls.tpm_device" is set but "tls.key_tpm" is not`},
		{"pkcs11 pin in URI", strings.Replace(base, "key = \"d.key\"\n", "key_pkcs11 = \"pkcs11:token=a;object=b?module-path=/m.so&pin-value=1234\"\n", 1), `"tls.key_pkcs11": PKCS#11 URI`},
		{"bad pin", base + "pin_sha256 = \"zz\"\n", "pin_sha256"},
		{"unknown", base + "[tunnel]\ndriverr = \"x\"\n", `client.toml:7: unknown key "tunnel.driverr" (did you mean "driver"?)`},
		{"negative cpus", base + "[tunnel]\ncpus = -2\n", `"tunnel.cpus": -2 is outside`},
		{"bad driver", base + "[tunnel]\ndriver = \"tap\"\n", `"tap"`},
		{"backoff", base + "[reconnect]\nmin_delay = \"10s\"\nmax_delay = \"1s\"\n", "min_delay <= max_delay"},
		{"main table", base + "[tunnel]\ntable = 254\n", `"tunnel.table": 254 is not a free routing table`},
		{"negative table", base + "[tunnel]\ntable = -1\n", `"tunnel.table"`},
		{"kill switch not a bool", base + "[tunnel]\nkill_switch = \"yes\"\n", "kill_switch"},
		{"refused delay", base + "[reconnect]\nrefused_delay = \"-1m\"\n", `"reconnect.refused_delay": -1m0s is negative`},
		{"transport mode", base + "[transport]\nmode = \"dtls\"\n", `"transport.mode": "dtls" is not "auto", "quic" or "tls"`},
		{"transport durations", base + "[transport]\nretry_udp = \"-1s\"\n", `"transport.retry_udp": must be positive`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "client.toml")
			if err := os.WriteFile(path, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(path)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.ServerName != "gw.test" || c.Admin.Socket != DefaultSocket("client") || c.Tunnel.Device != AutoDevice || c.Reconnect.RefusedDelay != 5*time.Minute ||
					c.Tunnel.Table != DefaultTable || c.Tunnel.KillSwitch != nil || c.Tunnel.AllowLAN {
					t.Fatalf("defaults: %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want %q", err, tt.want)
			}
		})
	}
}

// Two profiles with named devices get two tables (and marks) unless one
// is configured.
func TestConfigTablePerDevice(t *testing.T) {
	base := "server = \"gw.test:8443\"\n[tls]\nca = \"ca.crt\"\ncert = \"d.crt\"\nkey = \"d.key\"\n[tunnel]\n"
	for _, tt := range []struct {
		extra string
		want  int
	}{
		{"device = \"sp0\"\n", DefaultTable},
		{"device = \"sp1\"\n", DefaultTable + 1},
		{"device = \"sp1\"\ntable = 100\n", 100},
		{"", DefaultTable},
	} {
		path := filepath.Join(t.TempDir(), "client.toml")
		if err := os.WriteFile(path, []byte(base+tt.extra), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		if c.Tunnel.Table != tt.want {
			t.Errorf("%q: table %d, want %d", tt.extra, c.Tunnel.Table, tt.want)
		}
	}
}

// TestConfigFilesBounded: the laptop reads its config, CA, certificate and
// key only from regular files under a cap: /dev/zero or a directory gets
// one error naming the key and the file, not a process growing without
// bound.
func TestConfigFilesBounded(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadConfig("/dev/zero"); err == nil || !strings.Contains(err.Error(), "/dev/zero: not a regular file (a character device)") {
		t.Fatalf("config /dev/zero: %v", err)
	}
	ca := newTestCA(t, "Laptop CA")
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"ca", "cert", "key"} {
		files := map[string]string{"ca": "ca.crt", "cert": "ca.crt", "key": "d.key"}
		files[key] = "/dev/zero"
		if key == "key" {
			files[key] = dir // a directory
		}
		path := filepath.Join(dir, "client.toml")
		text := "server = \"gw.test:8443\"\n[tls]\nca = \"" + files["ca"] + "\"\ncert = \"" + files["cert"] + "\"\nkey = \"" + files["key"] + "\"\n"
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.loadMaterial()
		if err == nil || !strings.Contains(err.Error(), "tls."+key+" "+files[key]+": not a regular file") {
			t.Fatalf("tls.%s = %s: %v", key, files[key], err)
		}
	}
}
