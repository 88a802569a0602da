package client

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/client/policyroute"
	"github.com/sallyport/sallyport/tunnel"
)

// The memory file: written atomically with mode 0600 (creating the state
// directory), read back the same; a missing file is no memory, anything
// that is not a memory of this version is an error (the caller fails
// closed), and so is something that is not a regular file.
func TestMemoryFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	const conf = "/etc/sallyport/acme.toml"
	cfg := &Config{Path: conf, stateDir: dir}
	path := memoryFile(cfg)
	if path != filepath.Join(dir, "profile-acme.json") {
		t.Fatalf("memory file %s", path)
	}
	if m, err := loadMemory(path, conf); m != nil || err != nil {
		t.Fatalf("never connected: %v %v", m, err)
	}
	on := true
	pc := testConfig()
	pc.KillSwitch = &on
	pc.Address6 = pfx("fd00:8::2/64")[0]
	m := memoryOf(pc, "gw.example:443", conf, time.Now())
	if err := saveMemory(path, m); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("memory file mode: %v %v", fi, err)
	}
	if di, err := os.Stat(dir); err != nil || di.Mode().Perm() != 0o700 {
		t.Fatalf("state directory mode: %v %v", di, err)
	}
	got, err := loadMemory(path, conf)
	if err != nil || !got.same(m) || got.Config != conf || !got.IPv6 || got.KillSwitch == nil || !*got.KillSwitch || got.Server != "gw.example:443" {
		t.Fatalf("read back %+v %v, want %+v", got, err, m)
	}
	other := m
	other.At, other.Server = m.At.Add(time.Hour), "other:443"
	if !m.same(other) {
		t.Error("when and where make a memory different")
	}
	other.KillSwitch = nil
	if m.same(other) {
		t.Error("a different kill_switch is the same memory")
	}
	// Another client file of the same name (a copy in a home directory, a
	// staging profile) shares the memory's file name, not its word: its
	// memory is an error naming both, and the caller fails closed.
	if _, err := loadMemory(path, "/home/alice/acme.toml"); err == nil ||
		!strings.Contains(err.Error(), conf) || !strings.Contains(err.Error(), "/home/alice/acme.toml") {
		t.Errorf("the memory of %s read for another file: %v", conf, err)
	}
	other = m
	other.Config = "/home/alice/acme.toml"
	if m.same(other) {
		t.Error("the memory of another client file is the same memory")
	}
	// A memory written before files were named, or a config without a
	// path, is not a mismatch.
	if _, err := loadMemory(path, ""); err != nil {
		t.Errorf("config without a path: %v", err)
	}
	for name, content := range map[string]string{
		"truncated":      `{"version": 1, "routes": ["10.1.0.0/16"`,
		"other version":  `{"version": 2, "routes": []}`,
		"no version":     `{"routes": ["0.0.0.0/0"]}`,
		"bad prefix":     `{"version": 1, "routes": ["10.1.0.0/33"]}`,
		"not an object":  `[]`,
		"empty":          ``,
		"garbage binary": "\x00\x01\x02",
	} {
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if m, err := loadMemory(path, conf); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %+v %v, want an error naming the file", name, m, err)
		}
	}
	os.Remove(path)
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := loadMemory(path, conf); err == nil {
		t.Error("a directory read as a memory")
	}
	// A config without a file name has one memory of its own.
	if p := memoryFile(&Config{stateDir: dir}); p != filepath.Join(dir, "profile-default.json") {
		t.Errorf("memory of a config without a path: %s", p)
	}
}

// Before the first session the remembered prefixes are refused; with the
// kill switch off at start, a family they cover whole is left open (that
// would be a kill switch someone turned off), the rest is still refused.
func TestBootRoutes(t *testing.T) {
	m := memory{Routes: pfx("0.0.0.0/1", "128.0.0.0/1", "10.1.0.0/16", "2001:db8::/32")}
	if got := m.bootRoutes(true); !slices.Equal(got, m.Routes) {
		t.Errorf("kill switch on: %v", got)
	}
	if got := m.bootRoutes(false); !slices.Equal(got, pfx("2001:db8::/32")) {
		t.Errorf("kill switch off, v4 whole: %v", got)
	}
	m = memory{Routes: pfx("10.1.0.0/16", "::/0")}
	if got := m.bootRoutes(false); !slices.Equal(got, pfx("10.1.0.0/16")) {
		t.Errorf("kill switch off, v6 whole: %v", got)
	}
}

// start with a memory: the kill switch the gateway pushed last time is on
// and the pushed prefixes refused before anything connects; the first
// config replaces them without a gap; teardown removes it all. The client
// file's kill_switch = false leaves a remembered full tunnel open (the
// company's other prefixes stay refused), but not a remembered pushed
// kill_switch = true: that wins before the first connection as it does
// while connected.
func TestNetStateStartRemembered(t *testing.T) {
	on := true
	r := &recorder{}
	logs := &syncBuffer{}
	n := &netState{sys: r, dev: "sp0", log: testLogger(logs), table: DefaultTable, servers: []string{"198.18.0.2:8443"}}
	mem := &memory{Version: memoryVersion, KillSwitch: &on, Routes: pfx("10.1.0.0/16", "2001:db8::/32")}
	if err := n.start(boot{mem: mem, path: "/state/profile-acme.json"}); err != nil {
		t.Fatal(err)
	}
	in, _ := installed(r, "sp0", DefaultTable)
	want := []string{"unreachable 10.1.0.0/16 table 21328 metric 21328", "unreachable 2001:db8::/32 table 21328 metric 21328"}
	if !in.KillSwitch || !slices.Equal(in.Routes, want) || len(in.Rules) != 2 {
		t.Fatalf("before the first connection: %+v", in)
	}
	mustContain(t, logs.String(), "as the gateway's last config asked")
	mustContain(t, logs.String(), "refused until the tunnel is up")
	r.mu.Lock()
	r.calls = nil
	r.mu.Unlock()
	pc := testConfig()
	pc.KillSwitch = &on
	pc.Routes = pfx("10.1.0.0/16")
	if err := n.apply(pc); err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(r.log(), func(c string) bool { return strings.HasPrefix(c, "kill-") }) ||
		slices.Contains(r.log(), "route- unreachable 10.1.0.0/16 table 21328 metric 21328") {
		t.Fatalf("the first config opened a gap: %q", r.log())
	}
	if in, _ := installed(r, "sp0", DefaultTable); !in.KillSwitch || len(in.Routes) != 2 {
		t.Fatalf("after the first config: %+v", in)
	}
	n.teardown()
	if k := r.kernel(); len(k.routes) != 0 || len(k.rules) != 0 || len(k.kill) != 0 {
		t.Fatalf("teardown left %+v", k)
	}

	off := false
	r2 := &recorder{}
	n2 := &netState{sys: r2, dev: "sp0", log: testLogger(logs), table: DefaultTable, local: &off}
	full := &memory{Version: memoryVersion, Routes: pfx("0.0.0.0/0", "10.1.0.0/16")}
	if err := n2.start(boot{mem: full}); err != nil {
		t.Fatal(err)
	}
	if in, _ := installed(r2, "sp0", DefaultTable); in.KillSwitch || len(in.Routes) != 0 {
		t.Fatalf("kill_switch = false in the file and a remembered full tunnel: %+v", in)
	}
	mustContain(t, logs.String(), "the client file says kill_switch = false")
	split := &memory{Version: memoryVersion, KillSwitch: &on, Routes: pfx("10.1.0.0/16")}
	r3 := &recorder{}
	n3 := &netState{sys: r3, dev: "sp0", log: testLogger(logs), table: DefaultTable, local: &off}
	if err := n3.start(boot{mem: split}); err != nil {
		t.Fatal(err)
	}
	if in, _ := installed(r3, "sp0", DefaultTable); !in.KillSwitch || !slices.Equal(in.Routes, want[:1]) {
		t.Fatalf("kill_switch = false in the file, a remembered split tunnel with a pushed kill switch: %+v", in)
	}
	mustContain(t, logs.String(), "wins over kill_switch = false in the client file")

	// A remembered full tunnel without IPv6 refuses IPv6 before the first
	// connection as it did while connected (unreachable ::/0), beside the
	// kill switch.
	r4 := &recorder{}
	n4 := &netState{sys: r4, dev: "sp0", log: testLogger(logs), table: DefaultTable}
	if err := n4.start(boot{mem: &memory{Version: memoryVersion, Routes: pfx("0.0.0.0/1", "128.0.0.0/1")}}); err != nil {
		t.Fatal(err)
	}
	if in, _ := installed(r4, "sp0", DefaultTable); !in.KillSwitch || !slices.Contains(in.Routes, "unreachable ::/0 table 21328 metric 21328") {
		t.Fatalf("a remembered v4-only full tunnel: %+v", in)
	}
}

// Through the whole client: a session's config is remembered in the state
// directory; the next client on that profile, before it has any session,
// has the kill switch on and the prefixes refused; a push that changes
// them is remembered too. A client file of the same name elsewhere does
// not start with that memory's word: it fails closed.
func TestRememberedAcrossUp(t *testing.T) {
	noLeaks(t)
	state := t.TempDir()
	acme := filepath.Join(t.TempDir(), "acme.toml")
	inState := func(c *Config) { c.stateDir, c.Path = state, acme }
	on := true
	e := startClient(t, envOpt{edit: inState})
	pc := testConfig()
	pc.KillSwitch = &on
	pc.Routes = pfx("10.1.0.0/16")
	pc.Caps = []string{tunnel.CapPush}
	s, _ := e.up(pc)
	e.status("connected", func(st Status) bool { return st.Connected })
	path := filepath.Join(state, "profile-acme.json")
	m, err := loadMemory(path, acme)
	if err != nil || m == nil || m.Config != acme || m.KillSwitch == nil || !*m.KillSwitch || !slices.Equal(m.Routes, pc.Routes) {
		t.Fatalf("memory after the first session: %+v %v", m, err)
	}
	pc.Routes = pfx("10.1.0.0/16", "10.2.0.0/16")
	b, _ := tunnel.EncodeConfig(pc)
	if err := s.w.WriteControl(tunnel.FramePush, b); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for {
		if m, _ := loadMemory(path, acme); m != nil && len(m.Routes) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a live push was not remembered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	e.stop()
	if k := e.sys.kernel(); len(k.kill) != 0 || len(k.routes) != 0 {
		t.Fatalf("the first client's stop left %+v", k)
	}

	e2 := startClient(t, envOpt{edit: inState})
	st := e2.status("the kill switch before any session", func(st Status) bool { return st.Installed.KillSwitch })
	if st.Connected || !slices.Equal(st.Installed.Routes, []string{"unreachable 10.1.0.0/16 table 21328 metric 21328",
		"unreachable 10.2.0.0/16 table 21328 metric 21328"}) {
		t.Fatalf("before the first session: %+v", st)
	}
	e2.stop()

	// The profile's memory says: no kill switch. Another acme.toml (a
	// staging copy in a home directory) must not make the real one start
	// open, nor start with the real one's word itself.
	if err := saveMemory(path, memory{Version: memoryVersion, Config: acme, Routes: pfx("10.1.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	e3 := startClient(t, envOpt{edit: func(c *Config) { c.stateDir, c.Path = state, filepath.Join(t.TempDir(), "acme.toml") }})
	st = e3.status("the kill switch for another file's memory", func(st Status) bool { return st.Installed.KillSwitch })
	if st.Connected || len(st.Installed.Routes) != 0 {
		t.Fatalf("another client file of the same name started with this one's memory: %+v", st)
	}
	mustContain(t, e3.logs.String(), "two client files of one name")
}

// A profile without a device that crashed on another spN (sp7 then, the
// device it gets now is another): up undoes sp7's DNS, takes over its kill
// switch and refused prefixes (table 21335), records the device it got in
// the state directory, and drops the record on a clean stop.
func TestUpRecoversPreviousDevice(t *testing.T) {
	noLeaks(t)
	state := t.TempDir()
	var cfg *Config
	edit := func(c *Config) { c.stateDir, c.Tunnel.Device, c.Tunnel.Table = state, AutoDevice, 0; cfg = c }
	pre := &Config{stateDir: state}
	ready := make(chan struct{})
	e := startClient(t, envOpt{edit: func(c *Config) {
		edit(c)
		pre.Admin = c.Admin
		if err := writeDeviceRecord(pre, "sp7"); err != nil {
			t.Fatal(err)
		}
	}, onReady: func() { close(ready) }, kernel: func(r *recorder) {
		_ = r.InstallKillSwitch(newKillSpec("sp7", DefaultTable+7, nil, nil))
		for _, rt := range planRoutes(pfx("10.9.0.0/16"), "sp7", DefaultTable+7, false).routes {
			if rt.Unreachable {
				_ = r.ReplaceTableRoute(rt)
			}
		}
	}})
	select {
	case <-ready:
	case <-time.After(wait):
		t.Fatal("the client never got its device")
	}
	if !slices.Contains(e.sys.log(), "dns-recover sp7") {
		t.Fatalf("the DNS of the crashed run's device was not recovered: %q", e.sys.log())
	}
	k := e.sys.kernel()
	if _, ok := k.kill["sallyport-sp7"]; ok || len(k.kill) != 1 ||
		!slices.ContainsFunc(k.routes, func(r policyroute.TableRoute) bool { return r.Table == DefaultTable && r.Unreachable }) ||
		slices.ContainsFunc(k.routes, func(r policyroute.TableRoute) bool { return r.Table == DefaultTable+7 }) {
		t.Fatalf("sp7's kill switch and table were not taken over: %+v", k)
	}
	if got := readDeviceRecord(cfg); got != "fake0" {
		t.Fatalf("device record %q, want the device it got", got)
	}
	e.stop()
	if got := readDeviceRecord(cfg); got != "" {
		t.Fatalf("record %q left after a clean stop", got)
	}
}
