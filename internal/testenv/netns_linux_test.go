package testenv

import (
	"testing"

	"github.com/vishvananda/netns"
)

// TestInNetns: fn runs in a namespace other than the test's, and the
// test's thread is back in its own afterwards.
func TestInNetns(t *testing.T) {
	before, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()
	ran := false
	InNetns(t, "network namespaces", func() {
		ran = true
		inside, err := netns.Get()
		if err != nil {
			t.Error(err) // fn runs on InNetns's goroutine: no Fatal here
			return
		}
		defer inside.Close()
		if inside.Equal(before) {
			t.Error("fn ran in the test's own network namespace")
		}
	})
	if !ran {
		t.Fatal("fn did not run")
	}
	after, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer after.Close()
	if !after.Equal(before) {
		t.Error("the test's namespace changed")
	}
}
