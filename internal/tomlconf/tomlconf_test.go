package tomlconf

import (
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
		{"syntax", "listen = \n", "line 1"},
		{"wrong type", "listen = 5\n", "listen"},
		{"bad duration", "[tls]\ntimeout = \"5 parsecs\"\n", "timeout"},
		{"bare integer duration", "[tls]\ntimeout = 10\n", `key "tls.timeout": a duration is a string with a unit`},
		{"bare float duration", "[tls]\ntimeout = 1.5\n", `key "tls.timeout": a duration is a string with a unit`},
		{"bare duration in array of tables", "[[rule]]\nwait = 3\n", `key "rule.wait"`},
		{"bare duration in map", "[waits]\na = 3\n", `key "waits.a"`},
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
