package client

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const origResolv = "# from DHCP\nnameserver 192.0.2.1\nnameserver 192.0.2.2\nsearch home.example\noptions edns0\n"

func newResolvConf(t *testing.T, content string, dev string) resolvConf {
	t.Helper()
	dir := t.TempDir()
	r := resolvConf{path: filepath.Join(dir, "resolv.conf"), backup: filepath.Join(dir, "state", "resolv.conf."+dev+".orig"), dev: dev}
	if content != "" {
		if err := os.WriteFile(r.path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return string(b)
}

var pushed = []netip.Addr{netip.MustParseAddr("10.8.0.53"), netip.MustParseAddr("fd00::53")}

func TestResolvConfSetRestore(t *testing.T) {
	r := newResolvConf(t, origResolv, "sp0")
	if err := r.set(pushed, []string{"~corp.example"}); err != nil {
		t.Fatal(err)
	}
	got := read(t, r.path)
	want := "# sallyport: DNS of tunnel sp0\n# The original is restored on `sallyport down`.\n" +
		"nameserver 10.8.0.53\nnameserver fd00::53\nnameserver 192.0.2.1\n" +
		"search corp.example home.example\n# from DHCP\noptions edns0\n"
	if got != want {
		t.Fatalf("resolv.conf:\n%s\nwant:\n%s", got, want)
	}
	if read(t, r.backup) != origResolv {
		t.Fatalf("backup %q", read(t, r.backup))
	}
	// A reconnect sets again: the backup must stay the true original.
	if err := r.set(pushed[:1], nil); err != nil {
		t.Fatal(err)
	}
	if read(t, r.backup) != origResolv {
		t.Fatalf("second set overwrote the backup with %q", read(t, r.backup))
	}
	if err := r.restore(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, r.path); got != origResolv {
		t.Fatalf("restored %q, want %q", got, origResolv)
	}
	if _, err := os.Stat(r.backup); !os.IsNotExist(err) {
		t.Fatalf("backup left behind: %v", err)
	}
	if err := r.restore(); err != nil {
		t.Fatalf("restore without a backup: %v", err)
	}
}

// TestResolvConfCrash: a run that died left its file and its backup; the
// next run's recovery (restore before set) brings the original back, and a
// set after a crash never backs up sallyport's own file.
func TestResolvConfCrash(t *testing.T) {
	r := newResolvConf(t, origResolv, "sp0")
	if err := r.set(pushed, nil); err != nil {
		t.Fatal(err)
	}
	// Crash: nothing restored. Next run sets again straight away.
	if err := r.set(pushed, nil); err != nil {
		t.Fatal(err)
	}
	if read(t, r.backup) != origResolv {
		t.Fatal("after a crash the backup no longer holds the original")
	}
	// Or the next run recovers first (osSystem.OpenDevice does).
	if err := r.restore(); err != nil {
		t.Fatal(err)
	}
	if got := read(t, r.path); got != origResolv {
		t.Fatalf("recovered %q", got)
	}
}

func TestResolvConfOthers(t *testing.T) {
	t.Run("someone rewrote it", func(t *testing.T) {
		r := newResolvConf(t, origResolv, "sp0")
		if err := r.set(pushed, nil); err != nil {
			t.Fatal(err)
		}
		dhcp := "nameserver 198.51.100.1\n"
		os.WriteFile(r.path, []byte(dhcp), 0o644)
		if err := r.restore(); err != nil {
			t.Fatal(err)
		}
		if got := read(t, r.path); got != dhcp {
			t.Fatalf("restore clobbered a newer file: %q", got)
		}
		if _, err := os.Stat(r.backup); !os.IsNotExist(err) {
			t.Fatal("backup left behind")
		}
	})
	t.Run("no resolv.conf before", func(t *testing.T) {
		r := newResolvConf(t, "", "sp0")
		if err := r.set(pushed, nil); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(read(t, r.path), "nameserver 10.8.0.53") {
			t.Fatal("not written")
		}
		if err := r.restore(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(r.path); !os.IsNotExist(err) {
			t.Fatalf("resolv.conf should be gone again: %v", err)
		}
	})
	t.Run("another tunnel owns it", func(t *testing.T) {
		r := newResolvConf(t, origResolv, "sp0")
		if err := r.set(pushed, nil); err != nil {
			t.Fatal(err)
		}
		other := r
		other.dev, other.backup = "sp1", r.backup+".sp1"
		if err := other.set(pushed, nil); err == nil || !strings.Contains(err.Error(), "tunnel sp0") {
			t.Fatalf("second tunnel took over: %v", err)
		}
		if err := other.restore(); err != nil {
			t.Fatal(err)
		}
		if ownerOf([]byte(read(t, r.path))) != "sp0" {
			t.Fatal("the other tunnel's restore touched sp0's file")
		}
	})
	t.Run("at most three resolvers", func(t *testing.T) {
		r := newResolvConf(t, origResolv, "sp0")
		four := append(pushed, netip.MustParseAddr("10.8.0.54"), netip.MustParseAddr("10.8.0.55"))
		if err := r.set(four, nil); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(read(t, r.path), "nameserver "); n != 3 {
			t.Fatalf("%d nameserver lines, want 3", n)
		}
	})
}
