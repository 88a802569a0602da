package tomlconf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type sample struct {
	Listen string `toml:"listen"`
	Rule   []struct {
		Wait time.Duration `toml:"wait"`
	} `toml:"rule"`
	Waits map[string]time.Duration `toml:"waits"`
	TLS   struct {
		Cert    string        `toml:"cert"`
		Timeout time.Duration `toml:"timeout"`
	} `toml:"tls"`
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name, text, wantErr string
	}{
		{"ok", "listen = \"a:1\"\n[tls]\ncert = \"x\"\ntimeout = \"5s\"\n", ""},
		{"unknown top key", "listne = \"a\"\n", `unknown key "listne"`},
		{"unknown nested key", "[tls]\ncrt = \"x\"\n", `unknown key "tls.crt"`},
		{"syntax", "listen = \n", "test.toml:1: "},
		{"wrong type", "listen = 5\n", "listen"},
		{"bad duration", "[tls]\ntimeout = \"5 parsecs\"\n", "timeout"},
		{"bare integer duration", "[tls]\ntimeout = 10\n", `key "tls.timeout": a duration is a string with a unit`},
		{"bare float duration", "[tls]\ntimeout = 1.5\n", `key "tls.timeout": a duration is a string with a unit`},
		{"bare duration in array of tables", "[[rule]]\nwait = 3\n", `key "rule.wait"`},
		{"bare duration in map", "[waits]\na = 3\n", `key "waits.a"`},
		// TOML keys are case-sensitive; the library is not.
		{"key in another case", "LISTEN = \"a:1\"\n", `test.toml:1: key "LISTEN": keys are case-sensitive: write "listen"`},
		{"bare duration in another case", "[tls]\nTIMEOUT = 10\n", `test.toml:2: key "tls.TIMEOUT": keys are case-sensitive: write "timeout"`},
		{"table in another case", "[TLS]\ncert = \"x\"\n", `key "TLS": keys are case-sensitive: write "tls"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s sample
			err := Decode("test.toml", tt.text, &s)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if s.TLS.Timeout != 5*time.Second {
					t.Fatalf("timeout = %v", s.TLS.Timeout)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "test.toml") {
				t.Fatalf("error %v, want it to contain %q and the file name", err, tt.wantErr)
			}
		})
	}
}

// cfg is shaped like the gateway's config, for the error messages.
type cfg struct {
	Listen string `toml:"listen"`
	TLS    struct {
		Cert string `toml:"cert"`
		Key  string `toml:"key"`
	} `toml:"tls"`
	Tunnel struct {
		Device   string        `toml:"device"`
		IPv4Pool string        `toml:"ipv4_pool"`
		IPv6Pool string        `toml:"ipv6_pool"`
		Driver   string        `toml:"driver"`
		Timeout  time.Duration `toml:"timeout"`
	} `toml:"tunnel"`
	Policy []struct {
		Name  string `toml:"name"`
		Match struct {
			OU []string `toml:"ou"`
			CN []string `toml:"cn"`
		} `toml:"match"`
		Allow []string `toml:"allow"`
	} `toml:"policy"`
}

// The config text the cases below break: multi-line strings and arrays,
// comments and inline tables before the mistakes, so line numbers are
// counted past them.
const goodConf = `# gateway
listen = "0.0.0.0:443" # the VPN port
[tls]
cert = """
a
b"""
key = 'k'
[tunnel]
device = "sp0"
ipv4_pool = "10.8.0.0/24"
[[policy]]
name = "ops"
match = { ou = ["ops"] }
allow = [
  "10.0.0.0/8", # all
  "192.168.0.0/16",
]
[[policy]]
name = "eng"
match = { ou = ["eng"], cn = ["*"] }
allow = ["10.1.0.0/16"]
`

// TestErrorsPointAtKey: a config error names the file, the line and the
// key, says which [[policy]] it is in, and suggests the nearest key; a
// misspelt table is one error suggesting the table, not one per key.
func TestErrorsPointAtKey(t *testing.T) {
	for _, tt := range []struct {
		name, edit, want string
	}{
		{"unknown key", "ipv4_pool = ", `c.toml:10: unknown key "tunnel.ipv4_pol" (did you mean "ipv4_pool"?)`},
		{"misspelt table", "[tunnel]", `c.toml:8: unknown table [tunel] (did you mean [tunnel]?)`},
		{"key in an array of tables", `allow = ["10.1`, `c.toml:21: [[policy]] #2 "eng": unknown key "alow" (did you mean "allow"?)`},
		{"key in an inline table", `cn = ["*"]`, `c.toml:20: [[policy]] #2 "eng": unknown key "match.nc" (did you mean "cn"?)`},
		{"swapped letters", "driver", `unknown key "tunnel.drvier" (did you mean "driver"?)`},
		{"key in the wrong table", "listen = ", `c.toml:1: unknown key "device" ("device" belongs in [tunnel])`},
		{"nothing near", "listen = ", `c.toml:1: unknown key "frobnicate" (top-level keys: listen, tls, tunnel, policy)`},
		// A short key two edits from a known one is no typo of it ("kxx"
		// is not "key"); a long one is ("ipv4_pooool").
		{"short and far", "key = ", `c.toml:7: unknown key "tls.kxx"`},
		{"long, two edits", "ipv4_pool = ", `c.toml:10: unknown key "tunnel.ipv4_pooool" (did you mean "ipv4_pool"?)`},
		{"other case and a typo", "ipv4_pool = ", `c.toml:10: unknown key "tunnel.IPV4_POL" (did you mean "ipv4_pool"?)`},
		{"wrong type", "device = ", `c.toml:9: key "tunnel.device": a string ("...") is needed here, not a number`},
		{"bare duration", "device = ", `c.toml:10: key "tunnel.timeout": a duration is a string with a unit`},
		{"syntax", "key = ", `c.toml:7: key "tls.key": expected value but found '\n' instead`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			text := goodConf
			switch tt.name {
			case "unknown key":
				text = strings.Replace(text, "ipv4_pool = ", "ipv4_pol = ", 1)
			case "misspelt table":
				text = strings.Replace(text, "[tunnel]", "[tunel]", 1)
			case "key in an array of tables":
				text = strings.Replace(text, `allow = ["10.1`, `alow = ["10.1`, 1)
			case "key in an inline table":
				text = strings.Replace(text, `cn = ["*"]`, `nc = ["*"]`, 1)
			case "swapped letters":
				text = strings.Replace(text, "ipv4_pool =", "drvier = \"water\"\nipv4_pool =", 1)
			case "key in the wrong table":
				text = strings.Replace(text, "listen = ", "device = \"sp1\"\nlisten = ", 1)
				text = strings.Replace(text, "# gateway\n", "", 1)
			case "short and far":
				text = strings.Replace(text, "key = 'k'", "kxx = 'k'", 1)
			case "long, two edits":
				text = strings.Replace(text, "ipv4_pool = ", "ipv4_pooool = ", 1)
			case "other case and a typo":
				text = strings.Replace(text, "ipv4_pool = ", "IPV4_POL = ", 1)
			case "nothing near":
				text = strings.Replace(text, "listen = ", "frobnicate = 1\nlisten = ", 1)
				text = strings.Replace(text, "# gateway\n", "", 1)
			case "wrong type":
				text = strings.Replace(text, `device = "sp0"`, `device = 0`, 1)
			case "bare duration":
				text = strings.Replace(text, `device = "sp0"`, `device = "sp0"`+"\ntimeout = 10", 1)
			case "syntax":
				text = strings.Replace(text, "key = 'k'", "key = ", 1)
			}
			var c cfg
			err := Decode("c.toml", text, &c)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error:\n%v\nwant it to contain:\n%s", err, tt.want)
			}
			if strings.Count(err.Error(), "unknown") > 1 {
				t.Errorf("one mistake, several errors: %v", err)
			}
			if !strings.Contains(tt.want, "did you mean") && strings.Contains(err.Error(), "did you mean") {
				t.Errorf("a suggestion where none is near: %v", err)
			}
		})
	}
	var c cfg
	if err := Decode("c.toml", goodConf, &c); err != nil || len(c.Policy) != 2 || c.Policy[1].Allow[0] != "10.1.0.0/16" {
		t.Fatalf("the good config: %v %+v", err, c)
	}
}

// TestWhere: an error from a config's own checks is put at the line of
// the key it names (in an array of tables, the element it names).
func TestWhere(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(path, []byte(goodConf+"[[device]]\ncn = \"a\"\n[[device]]\ncn = \"b\"\nipv4 = \"10.9.0.1\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := errors.New("x")
	for _, tt := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("key \"tunnel.ipv4_pool\": too small: %w", base), path + `:10: key "tunnel.ipv4_pool": too small`},
		{fmt.Errorf("[[device]] #2: key \"ipv4\": not in the pool"), path + `:26: [[device]] #2: key "ipv4": not in the pool`},
		{fmt.Errorf("[[device]] #1: give \"ipv4\""), path + `:22: [[device]] #1: give "ipv4"`},
		{fmt.Errorf("[[device]] #3: give \"ipv4\""), "config " + path + `: [[device]] #3`},
		{fmt.Errorf("key \"tls.crl\" is required"), "config " + path + `: key "tls.crl" is required`},
		{errors.New("no [[policy]] tables"), "config " + path + ": no [[policy]] tables"},
	} {
		got := Where(path, tt.err)
		if !strings.HasPrefix(got.Error(), tt.want) || !errors.Is(got, tt.err) {
			t.Errorf("Where(%q) = %q, want %q (wrapping it)", tt.err, got, tt.want)
		}
	}
}

// FuzzLocate: the key scanner never panics or loops, whatever the text.
func FuzzLocate(f *testing.F) {
	f.Add(goodConf)
	f.Add("a = \"\"\"x\n\"\"\"\"\"\n[[b]]\nc = [1, [2, {d = 3}]]\n")
	f.Add("x = {")
	f.Add("[[")
	f.Fuzz(func(t *testing.T, text string) {
		for _, e := range locate(text) {
			if e.line < 1 || e.line > strings.Count(text, "\n")+1 {
				t.Fatalf("line %d outside the text", e.line)
			}
		}
	})
}

func TestResolve(t *testing.T) {
	if got := Resolve("/etc/sp/server.toml", "ca.crt"); got != "/etc/sp/ca.crt" {
		t.Fatalf("got %s", got)
	}
	if got := Resolve("/etc/sp/server.toml", "/abs/ca.crt"); got != "/abs/ca.crt" {
		t.Fatalf("got %s", got)
	}
	if got := Resolve("/etc/sp/server.toml", ""); got != "" {
		t.Fatalf("got %s", got)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add("listen = \"a:1\"\n[tls]\ncert = \"x\"\n")
	f.Add("[[x]]\n")
	f.Fuzz(func(t *testing.T, text string) {
		var s sample
		_ = Decode("fuzz.toml", text, &s)
	})
}
