// Package testenv decides what a test does when the machine lacks something
// it needs (a tool such as openssl or systemd-analyze, or root). On a
// developer's machine the test skips with a message; in CI (CI=true in the
// environment) it fails instead, naming what is missing, so a CI run cannot
// pass by skipping the tests that guard behaviour.
package testenv

import (
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// InCI reports whether the tests run in CI: CI is set to a true value
// ("true", "1", ...), as CI services and .ci/run do.
func InCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// Require skips t when ok is false, or fails it under CI; what names the
// missing requirement ("openssl", "root").
func Require(t testing.TB, what string, ok bool) {
	t.Helper()
	if ok {
		return
	}
	if InCI() {
		t.Fatalf("missing %s: required in CI (CI=true), where tests must not skip", what)
		return
	}
	t.Skipf("missing %s: skipping (in CI this fails)", what)
}

// Root requires the test to run as root, for what (e.g. "network
// namespaces"). Under -short a root-only test is skipped, even as root and
// in CI: `go test -short` is the quick run that touches no namespace,
// nftables or TUN of the machine.
func Root(t testing.TB, what string) {
	t.Helper()
	root(t, what, testing.Short(), os.Geteuid() == 0)
}

func root(t testing.TB, what string, short, isRoot bool) {
	t.Helper()
	if short {
		t.Skipf("needs root (for %s): skipped under -short", what)
		return
	}
	Require(t, "root (for "+what+")", isRoot)
}

// Command requires the program name on PATH and returns its path.
func Command(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Require(t, "command "+strconv.Quote(name), err == nil)
	return p
}
