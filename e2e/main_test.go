package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var (
	// binPath is the sallyport binary under test ("" when unavailable).
	binPath string
	// binErr says why binPath is unavailable.
	binErr error
	// nsPrefix starts every namespace name this test run creates, so the
	// final sweep removes exactly ours and nobody else's.
	nsPrefix = fmt.Sprintf("sp%d-", os.Getpid()%100000)
)

func TestMain(m *testing.M) {
	if kind := os.Getenv("SP_HELPER"); kind != "" {
		// Re-executed as a traffic helper inside a namespace.
		os.Exit(runHelper(kind, helperArgs()))
	}
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	tmp, err := os.MkdirTemp("", "sp-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	binPath, binErr = findBinary(tmp)
	if binErr == nil && os.Geteuid() == 0 {
		// The copy the unprivileged gateway runs is made here, before any
		// test forks: a file being written while another goroutine forks
		// can be held open by the child, and exec then fails with "text
		// file busy".
		dir, err := prepareNobodyBin(binPath)
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
	}
	if os.Geteuid() == 0 && haveIP() {
		defer sweepNamespaces()
	}
	return m.Run()
}

// findBinary returns $SALLYPORT_BIN or builds ./cmd/sallyport into dir.
func findBinary(dir string) (string, error) {
	if p := os.Getenv("SALLYPORT_BIN"); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", fmt.Errorf("SALLYPORT_BIN %s: %w", p, err)
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("SALLYPORT_BIN: %w", err)
		}
		return abs, nil
	}
	out := filepath.Join(dir, "sallyport")
	cmd := exec.Command("go", "build", "-o", out, "github.com/sallyport/sallyport/cmd/sallyport")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/sallyport: %w\n%s", err, b)
	}
	return out, nil
}

func haveIP() bool {
	_, err := exec.LookPath("ip")
	return err == nil
}

// sweepNamespaces removes namespaces of this run that a crashed test left.
func sweepNamespaces() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], nsPrefix) {
			_ = exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
}

// TestHelperProcess exists so `-test.run=TestHelperProcess` selects no real
// test; TestMain dispatches helpers before any test runs.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("SP_HELPER") == "" {
		t.Skip("only runs as a re-executed helper")
	}
}
