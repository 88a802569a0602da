package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(bad, []byte("listen = \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missingSock := filepath.Join(t.TempDir(), "none.sock")
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"no args", nil, 2, "", "Usage:"},
		{"help", []string{"help"}, 0, "sallyport up -c client.toml", ""},
		{"version", []string{"version"}, 0, "sallyport dev", ""},
		{"unknown", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"server bad config", []string{"server", "-c", bad}, 1, "", "line 1"},
		{"server missing config", []string{"server", "-c", "/nonexistent/server.toml"}, 1, "", "no such file"},
		{"up bad config", []string{"up", "-c", bad}, 1, "", "bad.toml"},
		{"bad log level", []string{"server", "--log-level", "loud"}, 2, "", "--log-level"},
		{"status without daemon", []string{"status", "--socket", missingSock}, 1, "", "is sallyport running?"},
		{"server status without daemon", []string{"server", "status", "--socket", missingSock}, 1, "", "is sallyport running?"},
		{"kick needs a device", []string{"server", "kick", "--socket", missingSock}, 2, "", "Usage: sallyport server kick"},
		{"kick without daemon", []string{"server", "kick", "--socket", missingSock, "alice"}, 1, "", "is sallyport running?"},
		{"status takes no device", []string{"status", "--socket", missingSock, "alice"}, 2, "", "Usage: sallyport status"},
		{"pki help", []string{"pki", "--help"}, 0, "sallyport pki", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tt.args, &out, &errb)
			if code != tt.code || !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errb.String(), tt.stderr) {
				t.Fatalf("run(%q) = %d\nstdout: %s\nstderr: %s", tt.args, code, out.String(), errb.String())
			}
		})
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %s, want %s", n, got, want)
		}
	}
}
