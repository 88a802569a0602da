package cli

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifySocket stands in for systemd: it sets NOTIFY_SOCKET for the test
// and returns what the daemon tells it, one datagram per call.
func notifySocket(t *testing.T) func() string {
	t.Helper()
	dir, err := os.MkdirTemp("", "spnfy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return func() string {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 256)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no message to systemd: %v", err)
		}
		return string(buf[:n])
	}
}

// wait fails t when ch yields nothing within a generous bound (a hang, not
// a timing assertion).
func wait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not happen", what)
	}
	var zero T
	return zero
}

// TestRunDaemon: the daemon tells systemd when it is ready and when it is
// stopping, SIGHUP reloads without stopping, SIGTERM and SIGINT stop it.
func TestRunDaemon(t *testing.T) {
	for _, tt := range []struct {
		name string
		stop syscall.Signal
		hup  bool
	}{
		{"SIGTERM, with a reload handler", syscall.SIGTERM, true},
		{"SIGINT, without one", syscall.SIGINT, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			recv := notifySocket(t)
			// Whatever runDaemon does, a stray signal must not kill the test binary.
			guard := make(chan os.Signal, 8)
			signal.Notify(guard, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(guard)
			hups := make(chan struct{}, 4)
			var hup func()
			if tt.hup {
				hup = func() { hups <- struct{}{} }
			}
			running := make(chan context.Context, 1)
			done := make(chan error, 1)
			go func() {
				done <- runDaemon(hup, func(ctx context.Context, ready func()) error {
					ready()
					running <- ctx
					<-ctx.Done()
					return context.Cause(ctx)
				})
			}()
			ctx := wait(t, running, "start")
			if got := recv(); got != "READY=1" {
				t.Errorf("told systemd %q, want READY=1", got)
			}
			// SIGHUP reloads (when there is a handler) and never stops the
			// daemon: a second one is still handled as a reload.
			for range 2 {
				if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
					t.Fatal(err)
				}
				if !tt.hup {
					continue
				}
				select {
				case <-hups:
				case err := <-done:
					t.Fatalf("SIGHUP stopped the daemon: %v", err)
				case <-time.After(10 * time.Second):
					t.Fatal("no reload on SIGHUP")
				}
			}
			if err := ctx.Err(); err != nil {
				t.Fatalf("SIGHUP cancelled the daemon's context: %v", err)
			}
			if err := syscall.Kill(os.Getpid(), tt.stop); err != nil {
				t.Fatal(err)
			}
			if err := wait(t, done, "the stop on "+tt.stop.String()); err != context.Canceled {
				t.Errorf("daemon returned %v, want context.Canceled", err)
			}
			if got := recv(); got != "STOPPING=1" {
				t.Errorf("told systemd %q, want STOPPING=1", got)
			}
		})
	}
}

// missingMaterial writes a gateway config (with extra TOML before its
// [tls]) and a laptop config that load but name certificates and keys
// that do not exist.
func missingMaterial(t *testing.T, extra string) (gw, lap string) {
	dir := t.TempDir()
	gw = filepath.Join(dir, "server.toml")
	writeFile(t, gw, "listen = \"127.0.0.1:8443\"\n"+extra+"[tls]\ncert = \"gw.crt\"\nkey = \"gw.key\"\nclient_ca = \"ca.crt\"\n[tunnel]\nipv4_pool = \"10.8.0.0/24\"\n"+
		"[[policy]]\nname = \"all\"\nmatch = { cn = [\"*\"] }\nallow = [\"10.0.0.0/8\"]\n")
	lap = filepath.Join(dir, "client.toml")
	writeFile(t, lap, "server = \"127.0.0.1:8443\"\n[tls]\nca = \"ca.crt\"\ncert = \"dev.crt\"\nkey = \"dev.key\"\n")
	return gw, lap
}

// TestDaemonStartErrors: a config that loads but names material that does
// not exist stops the gateway and the laptop before anything is opened,
// naming the file.
func TestDaemonStartErrors(t *testing.T) {
	gw, lap := missingMaterial(t, "")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"server", "-c", gw, "--log-level", "debug"}, "gw.key"},
		{[]string{"up", "-c", lap}, "ca.crt"},
		{[]string{"up", "-c", lap, "--log-level", "shout"}, "--log-level"},
	} {
		code, out, errs := run(tt.args...)
		if code == 0 || out != "" || !strings.Contains(errs, tt.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want a failure naming %q", tt.args, code, out, errs, tt.want)
		}
	}
}

// TestStartErrorsAsJSON: with --log-format json (or the gateway's
// [log] format = "json") the error that stops the daemon is one JSON log
// line like every other, not a plain text line in the middle of them.
func TestStartErrorsAsJSON(t *testing.T) {
	gw, lap := missingMaterial(t, "[log]\nformat = \"json\"\n")
	dir := filepath.Dir(gw)
	bad := filepath.Join(dir, "bad.toml")
	writeFile(t, bad, "listen = \"127.0.0.1:8443\"\n[tunel]\n")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"server", "-c", bad, "--log-format", "json"}, bad + `:2: unknown table [tunel] (did you mean [tunnel]?)`},
		{[]string{"server", "-c", gw}, "gw.key"}, // JSON from the config
		{[]string{"up", "-c", lap, "--log-format", "json"}, "ca.crt"},
		{[]string{"up", "-c", filepath.Join(dir, "none.toml"), "--log-format", "json"}, "none.toml"},
	} {
		code, out, errs := run(tt.args...)
		var line struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Error string `json:"error"`
		}
		if code != 1 || out != "" || strings.Count(errs, "\n") != 1 || json.Unmarshal([]byte(errs), &line) != nil ||
			line.Level != "ERROR" || line.Msg != "cannot start" || !strings.Contains(line.Error, tt.want) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 1 and one JSON line whose error names %q", tt.args, code, out, errs, tt.want)
		}
	}
	// Text (the default) stays the one plain line.
	if code, _, errs := run("server", "-c", bad); code != 1 || !strings.HasPrefix(errs, "sallyport: "+bad+":2: unknown table") {
		t.Errorf("text mode: exit %d, stderr %q", code, errs)
	}
}
