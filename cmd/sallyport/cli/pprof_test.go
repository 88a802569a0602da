package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/adminsock"
	"github.com/sallyport/sallyport/server"
)

func TestServerPprof(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "gw.sock")
	want := []byte("\x1f\x8b profile bytes")
	reqs := make(chan adminsock.Request, 8)
	s, err := adminsock.Listen(sock, func(_ context.Context, r adminsock.Request) (any, error) {
		reqs <- r
		if r.Cmd != "pprof" {
			return nil, fmt.Errorf("unexpected command %q", r.Cmd)
		}
		return server.Profile{Kind: r.Kind, Seconds: r.Seconds, Data: want}, nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out := filepath.Join(dir, "cpu.pprof")
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"cpu", []string{"--socket", sock, "--kind", "cpu", "--seconds", "7", "-o", out}, 0, ""},
		{"needs -o", []string{"--socket", sock, "--kind", "heap"}, 2, "missing -o FILE"},
		{"no daemon", []string{"--socket", filepath.Join(dir, "none.sock"), "-o", out}, 1, "is sallyport running?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := run(append([]string{"server", "pprof"}, tt.args...)...)
			if code != tt.code || !strings.Contains(stderr, tt.stderr) {
				t.Fatalf("code %d, stderr %s", code, stderr)
			}
		})
	}
	if got := <-reqs; got.Kind != "cpu" || got.Seconds != 7 {
		t.Errorf("request %+v, want kind cpu, 7 seconds", got)
	}
	b, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(b, want) {
		t.Fatalf("profile file %q, %v", b, err)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o600 {
		t.Errorf("profile file mode %v, want 0600", fi.Mode().Perm())
	}
}
