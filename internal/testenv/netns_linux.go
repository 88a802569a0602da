package testenv

import (
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
)

// InNetns runs fn on a locked OS thread inside a fresh, anonymous network
// namespace, so a test's interfaces, routes and nftables never touch the
// host; it requires root (Root, for what). The namespace, and whatever the
// test left in it, disappears when its last reference goes: the handle is
// closed and the thread returns to the original namespace. If returning
// fails the thread stays locked and is destroyed with its goroutine.
func InNetns(t testing.TB, what string, fn func()) {
	t.Helper()
	Root(t, what)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			t.Errorf("get netns: %v", err)
			return
		}
		defer orig.Close()
		ns, err := netns.New() // also switches this thread into it
		if err != nil {
			t.Errorf("new netns: %v", err)
			return
		}
		defer func() {
			ns.Close()
			if err := netns.Set(orig); err != nil {
				t.Errorf("restore netns: %v", err)
				return // the thread stays locked and dies with the goroutine
			}
			runtime.UnlockOSThread()
		}()
		fn()
	}()
	<-done
}
