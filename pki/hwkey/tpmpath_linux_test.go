package hwkey

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestCheckTPMPath: the client (root) talks to a TPM only at a device or
// socket nobody else could have put in its place. Mutations caught:
// dropping the owner check, dropping the directories' writable check,
// judging the end's own mode (a 0660 tss-group device, a 0777 socket are
// fine), walking only one of the two paths (as given, where links lead),
// and openTPM not calling the check.
func TestCheckTPMPath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to another user")
	}
	const nobody = 65534
	dir := t.TempDir() // under /tmp: world-writable, sticky
	mkdir := func(name string, mode os.FileMode, uid int) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, uid); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sock := func(d, name string) string {
		t.Helper()
		p := filepath.Join(d, name)
		l, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		t.Cleanup(func() { l.Close() })
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
	good := mkdir("good", 0o755, 0)
	open := mkdir("open", 0o777, 0)
	sticky := mkdir("sticky", 0o777|os.ModeSticky, 0)
	theirs := mkdir("theirs", 0o755, nobody)
	group := mkdir("group", 0o775, 0)
	chown(group, 0, 100)
	rootSock := sock(good, "tpm.sock")
	type tcase struct{ name, path, want string } // want "" = accepted
	cases := []tcase{
		{"root's socket in root's directories", rootSock, ""},
		{"a socket anyone may connect to", chmod(sock(good, "open.sock"), 0o777), ""},
		{"in a sticky world-writable directory", sock(sticky, "tpm.sock"), ""},
		{"a link to root's socket", symlink(rootSock, filepath.Join(good, "link.sock")), ""},
		{"another user's socket", chown(sock(good, "theirs.sock"), nobody, nobody), "belongs to uid 65534"},
		{"in another user's directory", sock(theirs, "tpm.sock"), "belongs to uid 65534"},
		{"in a world-writable directory", sock(open, "tpm.sock"), "writable by others"},
		{"in a directory another group may write", sock(group, "tpm.sock"), "writable by others"},
		{"a link into a world-writable directory", symlink(sock(open, "real.sock"), filepath.Join(good, "to-open.sock")), "writable by others"},
		{"a link placed in a world-writable directory", symlink(rootSock, filepath.Join(open, "link.sock")), "writable by others"},
		{"a link that another user owns", chown(symlink(rootSock, filepath.Join(good, "theirs-link.sock")), nobody, nobody), "belongs to uid 65534"},
		{"relative", "tpm.sock", "clean absolute path"},
		{"not clean", good + "/../good/tpm.sock", "clean absolute path"},
	}
	// A TPM character device as the kernel makes it: root's, group tss
	// may use it (here /dev/null's numbers, group 100).
	dev := filepath.Join(good, "tpmrm0")
	if err := syscall.Mknod(dev, syscall.S_IFCHR|0o660, int(1<<8|3)); err == nil {
		cases = append(cases, tcase{"a root-owned character device group tss uses", chown(dev, 0, 100), ""})
	} else {
		t.Logf("no character device case: mknod: %v", err)
	}
	for _, tc := range cases {
		err := checkTPMPath(tc.path)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	// Every TPM the client opens goes through the check, before a byte
	// is sent to it.
	bad := chown(sock(good, "fake.sock"), nobody, nobody)
	if tr, err := openTPM(bad); err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		if tr != nil {
			tr.Close()
		}
		t.Fatalf("openTPM of another user's socket: %v, want refused", err)
	}
	if _, _, err := GenerateTPM(bad, ECDSAP256, "x"); err == nil || !strings.Contains(err.Error(), "put a TPM of their own") {
		t.Fatalf("GenerateTPM at another user's socket: %v, want refused", err)
	}
}
