package hwkey

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/pki/hwkey/hwtest"
)

// TestCheckModule: the client (root) loads only a PKCS#11 module nobody
// else could have replaced. Mutations caught: dropping the owner check,
// the writable check, the sticky-directory allowance, and either of the
// two paths walked (as given, and where its links lead).
func TestCheckModule(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to another user")
	}
	const nobody = 65534
	dir := t.TempDir() // under /tmp: world-writable, sticky
	lib := func(parts ...string) string {
		t.Helper()
		p := filepath.Join(append([]string{dir}, parts...)...)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("\x7fELF"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mkdir := func(name string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	chown := func(p string, uid, gid int) string {
		t.Helper()
		if err := os.Lchown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	chmod := func(p string, mode os.FileMode) string {
		t.Helper()
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	symlink := func(target, link string) string {
		t.Helper()
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		return link
	}

	good := lib("good", "p11.so")
	open := mkdir("open", 0o777)
	mkdir("sticky", 0o777|os.ModeSticky)
	chown(mkdir("theirs", 0o755), nobody, nobody)
	for _, tc := range []struct {
		name, path, want string // want "" = accepted
	}{
		{"root's library in root's directories", good, ""},
		{"group-writable for group root", chmod(lib("g0", "p11.so"), 0o664), ""},
		{"in a sticky world-writable directory", lib("sticky", "p11.so"), ""},
		{"a link to root's library", symlink(good, filepath.Join(dir, "good", "link.so")), ""},
		{"another user's library", chown(lib("u", "p11.so"), nobody, nobody), "belongs to uid 65534"},
		{"world-writable library", chmod(lib("w", "p11.so"), 0o666), "writable by others"},
		{"group-writable for another group", chown(chmod(lib("g", "p11.so"), 0o664), 0, 100), "writable by others"},
		{"in a world-writable directory", lib("open", "p11.so"), "writable by others"},
		{"in another user's directory", lib("theirs", "p11.so"), "belongs to uid 65534"},
		{"a link into a world-writable directory", symlink(lib("open", "real.so"), filepath.Join(dir, "good", "to-open.so")), "writable by others"},
		{"a link placed in a world-writable directory", symlink(good, filepath.Join(open, "link.so")), "writable by others"},
		{"a link that another user owns", chown(symlink(good, filepath.Join(dir, "good", "theirs.so")), nobody, nobody), "belongs to uid 65534"},
		{"a directory, not a library", filepath.Join(dir, "good"), "not a regular file"},
		{"relative", "p11.so", "clean absolute path"},
		{"not clean", filepath.Join(dir, "good") + "/../good/p11.so", "clean absolute path"},
	} {
		err := CheckModule(tc.path)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	for _, p := range hwtest.ModulePaths {
		if _, err := os.Stat(p); err == nil {
			if err := CheckModule(p); err != nil {
				t.Errorf("the system's SoftHSM module: %v", err)
			}
		}
	}
}
