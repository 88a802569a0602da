package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoFailsRatherThanSkips: `make demo` must not print "demo passed"
// when it could not run a step. Without its traffic helper it used to skip
// the ping, the fetch and the kill switch checks with a note and pass; now
// it stops and fails. (The demo itself is `make demo`; this runs only as
// far as the helper check, after it made its namespaces, which it removes.)
func TestDemoFailsRatherThanSkips(t *testing.T) {
	requireRoot(t)
	cmd := exec.Command("bash", filepath.Join("..", "scripts", "demo.sh"), binPath)
	cmd.Env = append(os.Environ(), "SALLYPORT_DEMOHELPER="+filepath.Join(t.TempDir(), "no-such-helper"))
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 1 {
		t.Fatalf("demo without its traffic helper: %v, want exit status 1:\n%s", err, out)
	}
	for _, want := range []string{"is not an executable: the traffic steps (ping, fetch, kill switch) cannot run", "demo FAILED"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "demo passed") || strings.Contains(string(out), "skipped") {
		t.Errorf("demo passed or skipped a step:\n%s", out)
	}
	// It stops there: no step runs on without the helper (a demo that
	// carried on would report the traffic steps it could not really run).
	if strings.Contains(string(out), "== device CA") {
		t.Errorf("the demo went on past the missing helper:\n%s", out)
	}
}
