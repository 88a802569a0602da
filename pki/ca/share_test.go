//go:build linux

package ca

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// withShareGroup sets ShareGroup for one test.
func withShareGroup(t *testing.T, g string) {
	old := ShareGroup
	ShareGroup = g
	t.Cleanup(func() { ShareGroup = old })
}

type modeGID struct {
	mode os.FileMode
	gid  int // -1: any
}

func statModeGID(t *testing.T, path string) (os.FileMode, int) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm(), int(fi.Sys().(*syscall.Stat_t).Gid)
}

// TestSharedWithGatewayGroup: a PKI made in a directory of the gateway's
// group leaves exactly what the gateway reads readable by that group (the
// directory and servers/ 0750, the gateway key 0640 in the group, the
// certificates and CRL 0644) and nothing else: the CA keys, the index and
// devices/ stay owner-only. The same PKI made elsewhere is owner-only
// throughout. (A group of the machine stands in for sallyport, which a
// test cannot create: one the test's files do not get by themselves, so
// a key left in the creator's group is caught.)
func TestSharedWithGatewayGroup(t *testing.T) {
	g, gid := shareTestGroup(t)
	for _, tt := range []struct {
		name   string
		group  string
		shared bool
	}{
		{"in the gateway's directory", g.Name, true},
		{"elsewhere", "sallyport-test-no-such-group", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			withShareGroup(t, tt.group)
			parent := t.TempDir()
			if err := os.Chown(parent, -1, gid); err != nil { // the gateway's directory, as the package makes /etc/sallyport
				t.Fatal(err)
			}
			p := New(filepath.Join(parent, "pki"))
			if err := p.Init(InitOptions{Key: KeyEd25519, Intermediate: true}); err != nil {
				t.Fatal(err)
			}
			srv, err := p.IssueServer(IssueOptions{Name: "vpn.example.com", Key: KeyEd25519})
			if err != nil {
				t.Fatal(err)
			}
			dev, err := p.IssueDevice(IssueOptions{Name: "alice", Key: KeyEd25519})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Revoke("", "alice", "keyCompromise", 30); err != nil { // rewrites crl.pem
				t.Fatal(err)
			}
			online, _, err := p.MakeIssuer(IssuerOptions{Key: KeyEd25519}) // the gateways' renewal issuer
			if err != nil {
				t.Fatal(err)
			}
			private := func(m os.FileMode) modeGID { return modeGID{m, -1} }
			sharedOr := func(sm, pm os.FileMode) modeGID {
				if tt.shared {
					return modeGID{sm, gid}
				}
				return private(pm)
			}
			want := map[string]modeGID{
				p.Dir:                      sharedOr(0o750, 0o700),
				p.Path("servers"):          sharedOr(0o750, 0o700),
				srv.KeyPath:                sharedOr(0o640, 0o600),
				online.KeyPath:             sharedOr(0o640, 0o600),
				online.CertPath:            private(0o644),
				srv.CertPath:               private(0o644),
				p.Path("ca.crt"):           private(0o644),
				p.Path("crl.pem"):          private(0o644),
				p.Path("root.key"):         private(0o600),
				p.Path("intermediate.key"): private(0o600),
				p.Path(indexDB):            private(0o600),
				p.Path("devices"):          private(0o700),
				dev.KeyPath:                private(0o600),
			}
			for path, w := range want {
				m, fg := statModeGID(t, path)
				if m != w.mode || (w.gid >= 0 && fg != w.gid) {
					t.Errorf("%s: mode %04o gid %d, want %04o gid %d", path, m, fg, w.mode, w.gid)
				}
			}
			if wantGroup := map[bool]string{true: tt.group, false: ""}[tt.shared]; srv.KeyGroup != wantGroup || p.Shared() != wantGroup || dev.KeyGroup != "" {
				t.Errorf("reported groups: server key %q, PKI %q, device key %q; want %q", srv.KeyGroup, p.Shared(), dev.KeyGroup, wantGroup)
			}
		})
	}
}

// shareTestGroup is a group to stand in for sallyport: as root (CI) one
// that is not the test's own egid (files do not get it unless chowned),
// else the test's egid.
func shareTestGroup(t *testing.T) (*user.Group, int) {
	t.Helper()
	if os.Geteuid() == 0 {
		for _, name := range []string{"nogroup", "nobody", "daemon", "bin"} {
			if g, err := user.LookupGroup(name); err == nil {
				if gid, _ := strconv.Atoi(g.Gid); gid != os.Getegid() {
					return g, gid
				}
			}
		}
	}
	g, err := user.LookupGroupId(strconv.Itoa(os.Getegid()))
	if err != nil {
		t.Skipf("no name for gid %d: %v", os.Getegid(), err)
	}
	return g, os.Getegid()
}
