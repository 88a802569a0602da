package testenv

import (
	"fmt"
	"strings"
	"testing"
)

// recorder is a testing.TB that records Fatalf/Skipf instead of stopping.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }
func (r *recorder) Skipf(format string, args ...any)  { r.skip = fmt.Sprintf(format, args...) }

func TestRequire(t *testing.T) {
	for _, tt := range []struct {
		name      string
		ci        string
		ok        bool
		wantFatal bool
		wantSkip  bool
	}{
		{"present, local", "", true, false, false},
		{"present, CI", "true", true, false, false},
		{"missing, local", "", false, false, true},
		{"missing, CI=false", "false", false, false, true},
		{"missing, CI=true", "true", false, true, false},
		{"missing, CI=1", "1", false, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			r := &recorder{TB: t}
			Require(r, "openssl", tt.ok)
			if (r.fatal != "") != tt.wantFatal || (r.skip != "") != tt.wantSkip {
				t.Fatalf("fatal=%q skip=%q, want fatal %v skip %v", r.fatal, r.skip, tt.wantFatal, tt.wantSkip)
			}
			for _, msg := range []string{r.fatal, r.skip} {
				if msg != "" && !strings.Contains(msg, "openssl") {
					t.Errorf("message %q does not name what is missing", msg)
				}
			}
		})
	}
}

func TestCommand(t *testing.T) {
	t.Setenv("CI", "true")
	r := &recorder{TB: t}
	Command(r, "sallyport-no-such-tool")
	if !strings.Contains(r.fatal, "sallyport-no-such-tool") {
		t.Fatalf("missing command under CI: fatal=%q", r.fatal)
	}
	r = &recorder{TB: t}
	if p := Command(r, "go"); p == "" || r.fatal != "" || r.skip != "" {
		t.Fatalf("go on PATH: path %q fatal %q skip %q", p, r.fatal, r.skip)
	}
}

// TestRootShort: under -short a root-only test skips, as root and in CI
// too; otherwise root runs it and a non-root CI run fails it.
func TestRootShort(t *testing.T) {
	for _, tt := range []struct {
		name                string
		ci                  string
		short, isRoot       bool
		wantFatal, wantSkip bool
	}{
		{"short, root, CI", "true", true, true, false, true},
		{"short, not root", "", true, false, false, true},
		{"root", "true", false, true, false, false},
		{"not root, CI", "true", false, false, true, false},
		{"not root, local", "", false, false, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			r := &recorder{TB: t}
			root(r, "namespaces", tt.short, tt.isRoot)
			if (r.fatal != "") != tt.wantFatal || (r.skip != "") != tt.wantSkip {
				t.Fatalf("fatal=%q skip=%q, want fatal %v skip %v", r.fatal, r.skip, tt.wantFatal, tt.wantSkip)
			}
		})
	}
}
