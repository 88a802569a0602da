package server

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/adminsock"
)

// TestPprof fetches profiles through a real admin socket: refused while
// [admin] pprof is off (the default), served as gzipped pprof data when on,
// and bad requests refused with a reason.
func TestPprof(t *testing.T) {
	s := &Server{}
	cfg := &Config{}
	s.setConfig(cfg)
	sock := filepath.Join(t.TempDir(), "gw.sock")
	admin, err := adminsock.Listen(sock, s.handleAdmin, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()

	if _, err := FetchProfile(sock, "heap", 0); err == nil || !strings.Contains(err.Error(), "[admin] pprof = true") {
		t.Fatalf("pprof while off: %v", err)
	}
	s.setConfig(&Config{Admin: AdminConfig{Pprof: true}})
	tests := []struct {
		kind    string
		seconds int
		wantErr string
	}{
		{"heap", 0, ""},
		{"goroutine", 0, ""},
		{"allocs", 0, ""},
		{"cpu", 1, ""},
		{"cpu", 0, "out of range"},
		{"cpu", MaxProfileSeconds + 1, "out of range"},
		{"secrets", 0, `unknown profile "secrets"`},
		{"", 0, "unknown profile"},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			data, err := FetchProfile(sock, tt.kind, tt.seconds)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("not gzipped pprof data: %v", err)
			}
			if raw, err := io.ReadAll(zr); err != nil || len(raw) == 0 {
				t.Fatalf("profile body: %d bytes, %v", len(raw), err)
			}
		})
	}
}

// TestPprofCPUStopsWithServer: a CPU profile in progress ends when the
// admin socket closes (shutdown), returning what it recorded.
func TestPprofCPUStopsWithServer(t *testing.T) {
	s := &Server{}
	s.setConfig(&Config{Admin: AdminConfig{Pprof: true}})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p, err := s.profile(ctx, "cpu", MaxProfileSeconds)
	if err != nil || len(p.Data) == 0 {
		t.Fatalf("cpu profile cut short: %d bytes, %v", len(p.Data), err)
	}
}

func TestPprofConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		text string
		want bool
	}{{minimal, false}, {minimal + "[admin]\npprof = true\n", true}} {
		path := filepath.Join(dir, "server.toml")
		if err := os.WriteFile(path, []byte(tt.text), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		if c.Admin.Pprof != tt.want {
			t.Errorf("admin.pprof = %v, want %v", c.Admin.Pprof, tt.want)
		}
	}
	c, err := LoadConfig("../configs/server.toml")
	if err != nil || c.Admin.Pprof {
		t.Fatalf("example config: pprof %v, %v (must be off by default)", c != nil && c.Admin.Pprof, err)
	}
}
