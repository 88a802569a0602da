package server

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExampleConfigParses(t *testing.T) {
	c, err := LoadConfig("../configs/server.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Tunnel.Device != "sp0" || c.Tunnel.MTU != 1500 || c.Tunnel.Keepalive != 10*time.Second || len(c.Policies) != 2 {
		t.Fatalf("unexpected example config: %+v", c)
	}
	if !filepath.IsAbs(c.TLS.ClientCA) && !strings.HasPrefix(c.TLS.ClientCA, "../configs/") {
		t.Fatalf("client_ca not resolved relative to the config: %s", c.TLS.ClientCA)
	}
}

// TestExampleConfigAfterEdits: the annotated example loads as shipped and
// after the edits the README tells an admin to make (another pool, IPv6
// turned on, or IPv6 only): no example entry is tied to the shipped pool.
// A static [[device]] uncommented with an address of the new pool loads
// too.
func TestExampleConfigAfterEdits(t *testing.T) {
	b, err := os.ReadFile("../configs/server.toml")
	if err != nil {
		t.Fatal(err)
	}
	shipped := string(b)
	const v4, v6 = `ipv4_pool = "10.8.0.0/24"`, `#ipv6_pool = "fd00:8::/64"`
	if !strings.Contains(shipped, v4) || !strings.Contains(shipped, v6) {
		t.Fatalf("the example no longer has %s and %s; update this test with the README", v4, v6)
	}
	device := func(s, addr string) string {
		s = strings.Replace(s, "\n#[[device]]\n", "\n[[device]]\n", 1)
		s = strings.Replace(s, "\n#cn = \"build-server\"\n", "\ncn = \"build-server\"\n", 1)
		s = strings.Replace(s, `#ipv4 = "10.8.0.200"`, `ipv4 = "`+addr+`"`, 1)
		if !strings.Contains(s, "\n[[device]]\n") || !strings.Contains(s, "\ncn = \"build-server\"\n") || !strings.Contains(s, "\nipv4 = \""+addr) {
			t.Fatal("the example's commented [[device]] changed; update this test")
		}
		return s
	}
	for _, tt := range []struct{ name, text string }{
		{"as shipped", shipped},
		{"another IPv4 pool", strings.Replace(shipped, v4, `ipv4_pool = "172.16.40.0/22"`, 1)},
		{"a small pool", strings.Replace(shipped, v4, `ipv4_pool = "192.168.200.0/28"`, 1)},
		{"dual stack", strings.Replace(shipped, v6, `ipv6_pool = "fd00:8::/64"`, 1)},
		{"IPv6 only", strings.Replace(strings.Replace(shipped, v4, "", 1), v6, `ipv6_pool = "fd12:3456::/64"`, 1)},
		{"static device in another pool", device(strings.Replace(shipped, v4, `ipv4_pool = "172.16.40.0/22"`, 1), "172.16.40.200")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "server.toml")
			if err := os.WriteFile(path, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadConfig(path); err != nil {
				t.Errorf("%v", err)
			}
		})
	}
}

const minimal = `
listen = "127.0.0.1:8443"
[tls]
cert = "s.crt"
key = "s.key"
client_ca = "ca.crt"
[tunnel]
ipv4_pool = "10.9.0.0/24"
[[policy]]
name = "all"
match = { cn = ["*"] }
allow = ["10.0.0.0/8"]
`

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"minimal ok", minimal, ""},
		// Errors name the file and line, and suggest the nearest key.
		{"unknown table", minimal + "\n[tunnel2]\nx = 1\n", `server.toml:14: unknown table [tunnel2] (did you mean [tunnel]?)`},
		{"typo in table", strings.Replace(minimal, "ipv4_pool", "ipv4_pol", 1), `server.toml:8: unknown key "tunnel.ipv4_pol" (did you mean "ipv4_pool"?)`},
		{"misspelt table", strings.Replace(minimal, "[tunnel]", "[tunel]", 1), `server.toml:7: unknown table [tunel] (did you mean [tunnel]?)`},
		{"typo in a policy", minimal + "[[policy]]\nname = \"eng\"\nmatch = { ou = [\"eng\"] }\nalow = [\"10.1.0.0/16\"]\n",
			`server.toml:16: [[policy]] #2 "eng": unknown key "alow" (did you mean "allow"?)`},
		{"check at its line", strings.Replace(minimal, "10.9.0.0/24", "10.9.0.0/31", 1), `server.toml:8: key "tunnel.ipv4_pool": 10.9.0.0/31 is too small`},
		{"missing cert", strings.Replace(minimal, `cert = "s.crt"`, "", 1), `"tls.cert" is required`},
		{"bad pool", strings.Replace(minimal, "10.9.0.0/24", "10.9.0.0", 1), `tunnel.ipv4_pool`},
		{"tiny pool", strings.Replace(minimal, "10.9.0.0/24", "10.9.0.0/31", 1), `too small`},
		{"bad driver", minimal + "", ""},
		{"bad listen", strings.Replace(minimal, "127.0.0.1:8443", "nowhere", 1), `"listen"`},
		{"no policy", strings.Split(minimal, "[[policy]]")[0], "no [[policy]]"},
		{"static outside pool", minimal + "[[device]]\ncn = \"a\"\nipv4 = \"10.10.0.5\"\n", "not a usable address"},
		{"static is gateway", minimal + "[[device]]\ncn = \"a\"\nipv4 = \"10.9.0.1\"\n", "not a usable address"},
		{"static both keys", minimal + "[[device]]\ncn = \"a\"\nfingerprint = \"ab\"\nipv4 = \"10.9.0.5\"\n", "exactly one"},
		{"keepalive vs timeout", strings.Replace(minimal, `ipv4_pool`, "keepalive = \"10s\"\ntimeout = \"15s\"\nipv4_pool", 1), "timeout >= 2 x keepalive"},
		{"mtu", strings.Replace(minimal, `ipv4_pool`, "mtu = 100\nipv4_pool", 1), "576..65535"},
		{"long device", strings.Replace(minimal, `ipv4_pool`, "device = \"averyveryverylongname\"\nipv4_pool", 1), "longer than 15"},
		{"driver", strings.Replace(minimal, `ipv4_pool`, "driver = \"tap\"\nipv4_pool", 1), `"tap" is not`},
		{"negative cpus", strings.Replace(minimal, `ipv4_pool`, "cpus = -1\nipv4_pool", 1), `"tunnel.cpus": -1 is outside`},
		{"metrics on the VPN port", minimal + "[metrics]\nlisten = \"0.0.0.0:8443\"\n", `"metrics.listen"`},
		{"metrics not host:port", minimal + "[metrics]\nlisten = \"9580\"\n", `"metrics.listen"`},
		{"metrics ok", minimal + "[metrics]\nlisten = \"127.0.0.1:9580\"\nper_device = true\n", ""},
		{"dual stack", strings.Replace(minimal, `ipv4_pool`, "ipv6_pool = \"fd00:8::/64\"\nipv4_pool", 1), ""},
		{"v6 only", strings.Replace(minimal, `ipv4_pool = "10.9.0.0/24"`, "ipv6_pool = \"fd00:8::/112\"", 1), ""},
		{"no pool", strings.Replace(minimal, `ipv4_pool = "10.9.0.0/24"`, "", 1), `"tunnel.ipv4_pool" or "tunnel.ipv6_pool" is required`},
		{"v6 pool is v4", strings.Replace(minimal, `ipv4_pool`, "ipv6_pool = \"10.10.0.0/24\"\nipv4_pool", 1), `not an IPv6 CIDR`},
		{"v6 pool too big", strings.Replace(minimal, `ipv4_pool`, "ipv6_pool = \"fd00:8::/48\"\nipv4_pool", 1), `/64 to /120`},
		{"v6 pool too small", strings.Replace(minimal, `ipv4_pool`, "ipv6_pool = \"fd00:8::/124\"\nipv4_pool", 1), `/64 to /120`},
		{"v6 pool link-local", strings.Replace(minimal, `ipv4_pool`, "ipv6_pool = \"fe80::/64\"\nipv4_pool", 1), `not a unicast`},
		{"v6 pool mapped", strings.Replace(minimal, `ipv4_pool`, "ipv6_pool = \"::ffff:10.0.0.0/120\"\nipv4_pool", 1), `not an IPv6 CIDR`},
		{"lease ttl short", strings.Replace(minimal, `ipv4_pool`, "lease_ttl = \"10s\"\nipv4_pool", 1), `lease_ttl`},
		{"static v6", strings.Replace(minimal, `ipv4_pool`, "ipv6_pool = \"fd00:8::/64\"\nipv4_pool", 1) + "[[device]]\ncn = \"a\"\nipv6 = \"fd00:8::5\"\n", ""},
		{"static v6 without pool", minimal + "[[device]]\ncn = \"a\"\nipv6 = \"fd00:8::5\"\n", "tunnel.ipv6_pool is not set"},
		{"static v6 outside", strings.Replace(minimal, `ipv4_pool`, "ipv6_pool = \"fd00:8::/64\"\nipv4_pool", 1) + "[[device]]\ncn = \"a\"\nipv6 = \"fd00:9::5\"\n", "not a usable address"},
		{"static v6 gateway", strings.Replace(minimal, `ipv4_pool`, "ipv6_pool = \"fd00:8::/64\"\nipv4_pool", 1) + "[[device]]\ncn = \"a\"\nipv6 = \"fd00:8::1\"\n", "not a usable address"},
		{"static v6 in ipv4 key", minimal + "[[device]]\ncn = \"a\"\nipv4 = \"fd00:8::5\"\n", "not an IPv4 address"},
		{"static neither", minimal + "[[device]]\ncn = \"a\"\n", `give "ipv4", "ipv6" or both`},
		{"static v4 without pool", strings.Replace(minimal, `ipv4_pool = "10.9.0.0/24"`, "ipv6_pool = \"fd00:8::/112\"", 1) + "[[device]]\ncn = \"a\"\nipv4 = \"10.9.0.5\"\n", "tunnel.ipv4_pool is not set"},
		{"masquerade", strings.Replace(minimal, `ipv4_pool`, "masquerade = [\"eth1\", \"wan0\"]\nipv4_pool", 1), ""},
		{"masquerade auto", strings.Replace(minimal, `ipv4_pool`, "masquerade = [\"auto\"]\nipv4_pool", 1), ""},
		{"masquerade auto and more", strings.Replace(minimal, `ipv4_pool`, "masquerade = [\"auto\", \"eth1\"]\nipv4_pool", 1), `"auto" cannot be combined`},
		{"masquerade bad name", strings.Replace(minimal, `ipv4_pool`, "masquerade = [\"eth 1\"]\nipv4_pool", 1), `not an interface name`},
		{"masquerade long name", strings.Replace(minimal, `ipv4_pool`, "masquerade = [\"averyveryverylongname\"]\nipv4_pool", 1), `not an interface name`},
		{"masquerade not a list", strings.Replace(minimal, `ipv4_pool`, "masquerade = \"eth1\"\nipv4_pool", 1), `masquerade`},
		{"negative max_sessions", strings.Replace(minimal, `ipv4_pool`, "max_sessions = -1\nipv4_pool", 1), `"tunnel.max_sessions": -1 is negative`},
		{"max_sessions ok", strings.Replace(minimal, `ipv4_pool`, "max_sessions = 5\nipv4_pool", 1), ""},
		{"negative max_handshakes", strings.Replace(minimal, `cert = "s.crt"`, "cert = \"s.crt\"\nmax_handshakes = -3", 1), `"tls.max_handshakes": -3 is negative`},
		{"cpus as text", strings.Replace(minimal, `ipv4_pool`, "cpus = \"all\"\nipv4_pool", 1), `cpus`},
		{"renewal ok", minimal + "[renewal]\nissuer_cert = \"i.crt\"\nissuer_key = \"i.key\"\nlifetime = \"168h\"\nrenew_at = 0.7\n", ""},
		{"renewal without issuer", minimal + "[renewal]\nlifetime = \"168h\"\n", `"renewal.issuer_cert" is required`},
		{"renewal without key", minimal + "[renewal]\nissuer_cert = \"i.crt\"\n", `"renewal.issuer_key" is required`},
		{"renewal short", minimal + "[renewal]\nissuer_cert = \"i.crt\"\nissuer_key = \"i.key\"\nlifetime = \"30s\"\n", `shorter than 1m`},
		{"renewal at 1", minimal + "[renewal]\nissuer_cert = \"i.crt\"\nissuer_key = \"i.key\"\nrenew_at = 1.0\n", `"renewal.renew_at": 1 is outside 0.1..0.95`},
		{"renewal lifetime number", minimal + "[renewal]\nissuer_cert = \"i.crt\"\nissuer_key = \"i.key\"\nlifetime = 3600\n", `duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "server.toml")
			if err := os.WriteFile(path, []byte(tt.text), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadConfig(path)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if c.TLS.Cert != filepath.Join(filepath.Dir(path), "s.crt") || c.Admin.Socket != DefaultAdminSocket || c.Tunnel.Driver != "wireguard" {
					t.Fatalf("defaults/resolution wrong: %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error = %v; want it to mention %q and the file", err, tt.want)
			}
		})
	}
}

// TestRenewalDefaults: renewal is off without issuer_cert; with it the
// lifetime is a week, renew_at two thirds, the CA bundle is client_ca and
// the record sits in the state directory.
func TestRenewalDefaults(t *testing.T) {
	t.Setenv("STATE_DIRECTORY", "/state/sp")
	path := filepath.Join(t.TempDir(), "server.toml")
	if err := os.WriteFile(path, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(path)
	if err != nil || c.Renewal.Enabled() {
		t.Fatalf("renewal without [renewal]: %+v %v", c.Renewal, err)
	}
	if err := os.WriteFile(path, []byte(minimal+"[renewal]\nissuer_cert = \"i.crt\"\nissuer_key = \"/etc/i.key\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	r := c.Renewal
	if !r.Enabled() || r.Lifetime != 7*24*time.Hour || r.RenewAt != 2.0/3 || r.CABundle != c.TLS.ClientCA ||
		r.Record != "/state/sp/renewals.jsonl" || r.IssuerCert != filepath.Join(filepath.Dir(path), "i.crt") || r.IssuerKey != "/etc/i.key" {
		t.Fatalf("renewal defaults %+v", r)
	}
}

// TestLeaseFileDefault: the lease file defaults to systemd's
// StateDirectory (first of several), else /var/lib/sallyport; a relative
// lease_file is taken relative to the config file.
func TestLeaseFileDefault(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "server.toml")
	for _, tt := range []struct{ env, extra, want string }{
		{"", "", "/var/lib/sallyport/leases.json"},
		{"/var/lib/sallyport:/var/lib/other", "", "/var/lib/sallyport/leases.json"},
		{"/srv/state", "", "/srv/state/leases.json"},
		{"/srv/state", "lease_file = \"l.json\"\n", filepath.Join(dir, "l.json")},
	} {
		t.Setenv("STATE_DIRECTORY", tt.env)
		if err := os.WriteFile(path, []byte(strings.Replace(minimal, "ipv4_pool", tt.extra+"ipv4_pool", 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		if c.Tunnel.LeaseFile != tt.want || c.Tunnel.LeaseTTL != DefaultLeaseTTL {
			t.Errorf("STATE_DIRECTORY=%q %q: lease_file %q ttl %v, want %q", tt.env, tt.extra, c.Tunnel.LeaseFile, c.Tunnel.LeaseTTL, tt.want)
		}
	}
}
