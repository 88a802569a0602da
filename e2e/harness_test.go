package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/sallyport/sallyport/internal/testenv"
)

// Addresses of the test topology. Everything lives inside namespaces the
// test creates; nothing is routed anywhere else.
const (
	lapAddr   = "198.18.0.1"  // laptop end of laptop<->gateway veth (/30)
	gwAddr    = "198.18.0.2"  // gateway end, where the server listens
	lap2Addr  = "198.18.0.5"  // second laptop (/30 198.18.0.4)
	gw2Addr   = "198.18.0.6"  // gateway end towards the second laptop
	gwLanAddr = "198.19.77.1" // gateway on the LAN (/24)
	lanHost   = "198.19.77.10"
	lanNet    = "198.19.77.0/24"
	poolNet   = "10.213.0.0/24"
	listen    = gwAddr + ":8443"
	gwName    = "gw.test"
)

// requireRoot skips t (fails it in CI) unless the suite can run: root, `ip`,
// and a binary.
func requireRoot(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: skipped in -short mode")
	}
	testenv.Root(t, "e2e: network namespaces, TUN devices")
	testenv.Require(t, "iproute2's `ip` command (e2e)", haveIP())
	return requireBin(t)
}

// requireNetns skips t (fails it in CI) unless namespaces can be made (root
// and `ip`).
func requireNetns(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: skipped in -short mode")
	}
	testenv.Root(t, "e2e: network namespaces")
	testenv.Require(t, "iproute2's `ip` command (e2e)", haveIP())
}

// requireBin fails t when the sallyport binary could not be built.
func requireBin(t *testing.T) string {
	t.Helper()
	if binErr != nil {
		t.Fatalf("sallyport binary unavailable: %v", binErr)
	}
	return binPath
}

// run runs a command and returns combined output, failing t on error.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// tryRun runs a command and returns combined output and error.
func tryRun(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

// waitFor polls cond every 25 ms until it returns true or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// shortTempDir returns a short directory (unix socket paths are limited to
// 108 bytes and t.TempDir paths can be long), removed at cleanup.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "spe")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// Topo is one test's set of namespaces.
type Topo struct {
	t    *testing.T
	Lap  string // laptop namespace
	Lap2 string // second laptop namespace ("" unless requested)
	GW   string // gateway namespace
	LAN  string // LAN host namespace

	mu    sync.Mutex
	procs []*Proc
	// home is each laptop namespace's own directories (laptopHome): a
	// laptop is a namespace, with its own state, runtime directory and
	// resolv.conf, as a real laptop has.
	home map[string]string
}

// newTopo creates laptop, gateway and LAN namespaces (plus a second laptop
// when twoLaptops), wired as described in the package doc, and registers
// cleanup that kills every process started through it and deletes the
// namespaces even when the test fails.
func newTopo(t *testing.T, twoLaptops bool) *Topo {
	t.Helper()
	// Create the temp dir first: its removal is then registered before (and
	// so runs after) stopAll, which reads process output from it on failure.
	_ = t.TempDir()
	id := randHex(2)
	tp := &Topo{
		t:   t,
		Lap: nsPrefix + id + "-lap",
		GW:  nsPrefix + id + "-gw",
		LAN: nsPrefix + id + "-lan",
	}
	nss := []string{tp.Lap, tp.GW, tp.LAN}
	if twoLaptops {
		tp.Lap2 = nsPrefix + id + "-lap2"
		nss = append(nss, tp.Lap2)
	}
	t.Cleanup(func() {
		for _, ns := range nss {
			_, _ = tryRun("ip", "netns", "del", ns)
		}
	})
	// Registered after namespace deletion, so it runs before it (LIFO).
	t.Cleanup(tp.stopAll)
	for _, ns := range nss {
		run(t, "ip", "netns", "add", ns)
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	tp.home = map[string]string{}
	for _, ns := range []string{tp.Lap, tp.Lap2} {
		if ns != "" {
			tp.home[ns] = laptopHome(t, ns)
		}
	}
	// laptop <-> gateway
	run(t, "ip", "-n", tp.Lap, "link", "add", "eth0", "type", "veth", "peer", "name", "lap0", "netns", tp.GW)
	run(t, "ip", "-n", tp.Lap, "addr", "add", lapAddr+"/30", "dev", "eth0")
	run(t, "ip", "-n", tp.Lap, "link", "set", "eth0", "up")
	run(t, "ip", "-n", tp.GW, "addr", "add", gwAddr+"/30", "dev", "lap0")
	run(t, "ip", "-n", tp.GW, "link", "set", "lap0", "up")
	// gateway <-> LAN host
	run(t, "ip", "-n", tp.GW, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", tp.LAN)
	run(t, "ip", "-n", tp.GW, "addr", "add", gwLanAddr+"/24", "dev", "lan0")
	run(t, "ip", "-n", tp.GW, "link", "set", "lan0", "up")
	run(t, "ip", "-n", tp.LAN, "addr", "add", lanHost+"/24", "dev", "eth0")
	run(t, "ip", "-n", tp.LAN, "link", "set", "eth0", "up")
	run(t, "ip", "-n", tp.LAN, "route", "add", "default", "via", gwLanAddr)
	if twoLaptops {
		run(t, "ip", "-n", tp.Lap2, "link", "add", "eth0", "type", "veth", "peer", "name", "lap1", "netns", tp.GW)
		run(t, "ip", "-n", tp.Lap2, "addr", "add", lap2Addr+"/30", "dev", "eth0")
		run(t, "ip", "-n", tp.Lap2, "link", "set", "eth0", "up")
		run(t, "ip", "-n", tp.GW, "addr", "add", gw2Addr+"/30", "dev", "lap1")
		run(t, "ip", "-n", tp.GW, "link", "set", "lap1", "up")
		// Only the gateway's listen address is reachable directly; the LAN
		// is reachable only through the tunnel.
		run(t, "ip", "-n", tp.Lap2, "route", "add", gwAddr+"/32", "via", gw2Addr)
	}
	run(t, "ip", "netns", "exec", tp.GW, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
	return tp
}

// laptopHome gives laptop namespace ns what a laptop keeps of its own, so
// no test touches the host's: a resolv.conf (/etc/netns/NS/resolv.conf,
// which `ip netns exec` binds over /etc/resolv.conf, removed at cleanup),
// and a directory with the client's state, runtime and profile
// directories (laptopEnv). It returns that directory.
func laptopHome(t *testing.T, ns string) string {
	t.Helper()
	etc := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(etc) })
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("# e2e laptop "+ns+"\nnameserver 192.0.2.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	for _, d := range []string{"state", "run", "etc"} {
		if err := os.Mkdir(filepath.Join(home, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return home
}

// laptopEnv is the environment of every process the test starts in
// laptop namespace ns (none for other namespaces): the client's
// StateDirectory=, RuntimeDirectory= and ConfigurationDirectory= (its
// profiles) of its own, and a system bus that
// does not exist, so the client never talks to the host's
// systemd-resolved (a test that wants one passes its own address).
func (tp *Topo) laptopEnv(ns string) []string {
	home, ok := tp.home[ns]
	if !ok {
		return nil
	}
	return []string{
		"STATE_DIRECTORY=" + filepath.Join(home, "state"),
		"RUNTIME_DIRECTORY=" + filepath.Join(home, "run"),
		"CONFIGURATION_DIRECTORY=" + filepath.Join(home, "etc"), // the profiles `up NAME` reads
		"DBUS_SYSTEM_BUS_ADDRESS=unix:path=" + filepath.Join(home, "no-system-bus"),
	}
}

// Proc is a process started inside a namespace with output in files.
type Proc struct {
	Name    string
	Cmd     *exec.Cmd
	Stdout  string // path of the stdout file
	Stderr  string // path of the stderr file
	done    chan struct{}
	waitErr error
}

// start runs `ip netns exec ns argv...` with output captured under the
// test's temp dir. `ip netns exec` execs the command, so the pid is the
// command's own and signals reach it directly.
func (tp *Topo) start(ns, name string, env []string, argv ...string) *Proc {
	tp.t.Helper()
	dir := tp.t.TempDir()
	p := &Proc{
		Name:   name,
		Stdout: filepath.Join(dir, name+".stdout"),
		Stderr: filepath.Join(dir, name+".stderr"),
		done:   make(chan struct{}),
	}
	so, err := os.Create(p.Stdout)
	if err != nil {
		tp.t.Fatal(err)
	}
	se, err := os.Create(p.Stderr)
	if err != nil {
		tp.t.Fatal(err)
	}
	p.Cmd = exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
	p.Cmd.Stdout, p.Cmd.Stderr = so, se
	// Later entries win: the test's own env over the laptop's defaults.
	p.Cmd.Env = append(append(os.Environ(), tp.laptopEnv(ns)...), env...)
	if err := p.Cmd.Start(); err != nil {
		so.Close()
		se.Close()
		tp.t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.waitErr = p.Cmd.Wait()
		so.Close()
		se.Close()
		close(p.done)
	}()
	tp.mu.Lock()
	tp.procs = append(tp.procs, p)
	tp.mu.Unlock()
	return p
}

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits up to timeout for the process to end and reports whether it did.
func (p *Proc) Wait(timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// ExitCode is the exit status (-1 while running or when killed by a signal).
func (p *Proc) ExitCode() int {
	if !p.Exited() {
		return -1
	}
	return p.Cmd.ProcessState.ExitCode()
}

// Signal sends sig to the process (by pid) if it is still running.
func (p *Proc) Signal(sig syscall.Signal) {
	if !p.Exited() {
		_ = p.Cmd.Process.Signal(sig)
	}
}

// Stop sends SIGTERM, waits up to grace, then SIGKILLs. Returns whether the
// process ended on SIGTERM alone.
func (p *Proc) Stop(grace time.Duration) bool {
	p.Signal(syscall.SIGTERM)
	if p.Wait(grace) {
		return true
	}
	p.Signal(syscall.SIGKILL)
	p.Wait(5 * time.Second)
	return false
}

// Out returns what the process wrote to stdout so far.
func (p *Proc) Out() string { b, _ := os.ReadFile(p.Stdout); return string(b) }

// Err returns what the process wrote to stderr so far (slog goes here).
func (p *Proc) Err() string { b, _ := os.ReadFile(p.Stderr); return string(b) }

// Log returns stdout and stderr together.
func (p *Proc) Log() string { return p.Out() + p.Err() }

// stopAll kills every process started through the topology (by pid) and,
// when the test failed, logs their output for diagnosis.
func (tp *Topo) stopAll() {
	tp.mu.Lock()
	procs := tp.procs
	tp.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].Stop(3 * time.Second)
	}
	if tp.t.Failed() {
		for _, p := range procs {
			if strings.HasPrefix(p.Name, "helper-") {
				continue
			}
			tp.t.Logf("---- %s (exit %d) output ----\n%s", p.Name, p.ExitCode(), tail(p.Log(), 60))
		}
	}
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// sp runs the sallyport binary in ns (with the laptop's environment, if
// ns is a laptop) and returns combined output and error.
func (tp *Topo) sp(ns string, args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, binPath}, args...)...)
	cmd.Env = append(os.Environ(), tp.laptopEnv(ns)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// ---------------------------------------------------------------- PKI

// PKI is a device CA made with `sallyport pki`.
type PKI struct {
	t   *testing.T
	Dir string
}

func (k *PKI) path(p ...string) string { return filepath.Join(append([]string{k.Dir}, p...)...) }

// CA is the trust bundle path (server client_ca, client ca).
func (k *PKI) CA() string { return k.path("ca.crt") }

// CRL is the CRL path.
func (k *PKI) CRL() string { return k.path("crl.pem") }

// Device returns the cert and key path of a device.
func (k *PKI) Device(name string) (crt, key string) {
	return k.path("devices", name+".crt"), k.path("devices", name+".key")
}

// Server returns the cert and key path of a gateway cert.
func (k *PKI) Server(name string) (crt, key string) {
	return k.path("servers", name+".crt"), k.path("servers", name+".key")
}

// pki runs `sallyport pki SUB --dir D args...`, failing the test on error.
func (k *PKI) pki(sub string, args ...string) string {
	k.t.Helper()
	all := append([]string{"pki", sub, "--dir", k.Dir}, args...)
	out, err := exec.Command(binPath, all...).CombinedOutput()
	if err != nil {
		k.t.Fatalf("sallyport %s: %v\n%s", strings.Join(all, " "), err, out)
	}
	return string(out)
}

// newPKI runs `pki init` in a fresh directory.
func newPKI(t *testing.T, name string) *PKI {
	t.Helper()
	k := &PKI{t: t, Dir: filepath.Join(t.TempDir(), "pki")}
	k.pki("init", "--name", name)
	return k
}

// Issue issues a device cert in the given groups (extra args appended).
func (k *PKI) Issue(device string, groups []string, extra ...string) {
	k.t.Helper()
	args := []string{"--device", device}
	for _, g := range groups {
		args = append(args, "--group", g)
	}
	k.pki("issue", append(args, extra...)...)
}

// Revoke revokes a device's certificate (rewrites crl.pem).
func (k *PKI) Revoke(device string) { k.t.Helper(); k.pki("revoke", "--device", device) }

// ServerCert issues a gateway cert.
func (k *PKI) ServerCert(name string, extra ...string) {
	k.t.Helper()
	k.pki("server", append([]string{"--name", name}, extra...)...)
}

// ---------------------------------------------------------------- configs

// Policy is one [[policy]] block.
type Policy struct {
	Name   string
	Match  map[string][]string
	Allow  []string
	Routes []string
	DNS    []string // resolver IPs and search domains pushed to the device
	// KillSwitch, if set, is the policy's kill_switch (pushed to laptops).
	KillSwitch *bool
	// RequireHardwareKey is the policy's require_hardware_key.
	RequireHardwareKey bool
}

// ServerConf is rendered into server.toml.
type ServerConf struct {
	Listen, Cert, Key, ClientCA, CRL string
	Device, Pool, Driver, Socket     string
	Extra                            string // raw TOML appended at top level (before tables)
	Pool6                            string // tunnel.ipv6_pool, if any
	TunnelExtra                      string // raw TOML appended to [tunnel]
	Policies                         []Policy
}

// ClientConf is rendered into client.toml.
type ClientConf struct {
	Server, ServerName, CA, Cert, Key string
	Device, Driver, Socket            string
	// Transport is transport.mode: clientConf sets "tls" so a test of the
	// TLS stream stays one; the datagram path's tests set "auto" or "quic".
	Transport string
	Extra     string // raw TOML appended at the end (tables)
}

var tmplFuncs = template.FuncMap{
	"q":     strconv.Quote,
	"deref": func(b *bool) bool { return *b },
	"list": func(s []string) string {
		q := make([]string, len(s))
		for i, v := range s {
			q[i] = strconv.Quote(v)
		}
		return "[" + strings.Join(q, ", ") + "]"
	},
}

var serverTmpl = template.Must(template.New("server").Funcs(tmplFuncs).Parse(`# e2e test gateway
listen = {{q .Listen}}
{{.Extra}}
[tls]
cert = {{q .Cert}}
key = {{q .Key}}
client_ca = {{q .ClientCA}}
{{- if .CRL}}
crl = {{q .CRL}}
{{- end}}

[tunnel]
device = {{q .Device}}
ipv4_pool = {{q .Pool}}
{{- if .Pool6}}
ipv6_pool = {{q .Pool6}}
{{- end}}
driver = {{q .Driver}}
lease_file = "leases.json"
{{.TunnelExtra}}

[admin]
socket = {{q .Socket}}
{{range .Policies}}
[[policy]]
name = {{q .Name}}
match = { {{range $k, $v := .Match}}{{$k}} = {{list $v}}, {{end}}}
allow = {{list .Allow}}
{{- if .Routes}}
routes = {{list .Routes}}
{{- end}}
{{- if .KillSwitch}}
kill_switch = {{deref .KillSwitch}}
{{- end}}
{{- if .RequireHardwareKey}}
require_hardware_key = true
{{- end}}
{{- if .DNS}}
dns = {{list .DNS}}
{{- end}}
{{end}}`))

var clientTmpl = template.Must(template.New("client").Funcs(tmplFuncs).Parse(`# e2e test laptop
server = {{q .Server}}
server_name = {{q .ServerName}}

[tls]
ca = {{q .CA}}
{{- if .Cert}}
cert = {{q .Cert}}
key = {{q .Key}}
{{- end}}

[tunnel]
device = {{q .Device}}
driver = {{q .Driver}}

[admin]
socket = {{q .Socket}}
{{- if .Transport}}

[transport]
mode = {{q .Transport}}
{{- end}}
{{.Extra}}
`))

func render(t *testing.T, tm *template.Template, data any, path string) {
	t.Helper()
	var b bytes.Buffer
	if err := tm.Execute(&b, data); err != nil {
		t.Fatal(err)
	}
	// TOML inline tables may not have a trailing comma.
	s := strings.ReplaceAll(b.String(), ", }", " }")
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// capsOnly runs every gateway of the suite with only CAP_NET_ADMIN and
// CAP_NET_BIND_SERVICE, the capabilities its unit grants
// (SALLYPORT_E2E_CAPS_ONLY=1; `make test` sets it).
var capsOnly = os.Getenv("SALLYPORT_E2E_CAPS_ONLY") == "1"

// Gateway is a running (or stopped) sallyport server.
type Gateway struct {
	tp     *Topo
	Conf   string
	Socket string
	Proc   *Proc
	starts int
	// Wrap, if set, runs the server under this command (e.g. setpriv to
	// drop to an unprivileged user with only some capabilities).
	Wrap []string
	// Bin, if set, is the sallyport binary to run instead of binPath.
	Bin string
	// Groups are supplementary groups for a capability-limited gateway,
	// as a unit's SupplementaryGroups= would give (comma-separated).
	Groups string
}

// defaultServerConf returns the usual gateway config for pki k.
func defaultServerConf(k *PKI, driver, sockDir string, policies ...Policy) ServerConf {
	crt, key := k.Server(gwName)
	sc := ServerConf{
		Listen: listen, Cert: crt, Key: key, ClientCA: k.CA(),
		Device: "sp0", Pool: poolNet, Driver: driver,
		Socket: filepath.Join(sockDir, "gw.sock"), Policies: policies,
	}
	if _, err := os.Stat(k.CRL()); err == nil {
		sc.CRL = k.CRL()
	}
	if len(policies) == 0 {
		sc.Policies = []Policy{{Name: "engineering", Match: map[string][]string{"ou": {"eng"}}, Allow: []string{lanNet}}}
	}
	return sc
}

// startGateway writes server.toml and starts the server in the gateway
// namespace, waiting until its admin socket answers.
func (tp *Topo) startGateway(sc ServerConf) *Gateway {
	tp.t.Helper()
	g := &Gateway{tp: tp, Conf: filepath.Join(tp.t.TempDir(), "server.toml"), Socket: sc.Socket}
	render(tp.t, serverTmpl, sc, g.Conf)
	g.Start()
	return g
}

// Start (re)starts the server process and waits until status answers.
func (g *Gateway) Start() {
	t := g.tp.t
	t.Helper()
	g.starts++
	bin := binPath
	if g.Bin != "" {
		bin = g.Bin
	}
	wrap := g.Wrap
	if wrap == nil && capsOnly {
		// Root's uid, but only the packaged unit's capabilities (and its
		// SupplementaryGroups=, if the test gives one).
		wrap = []string{"setpriv", "--no-new-privs", "--inh-caps=-all" + unprivCaps,
			"--ambient-caps=-all" + unprivCaps, "--bounding-set=-all" + unprivCaps}
		if g.Groups != "" {
			wrap = append(wrap, "--groups="+g.Groups)
		}
	}
	argv := append(append([]string{}, wrap...), bin, "server", "-c", g.Conf)
	g.Proc = g.tp.start(g.tp.GW, fmt.Sprintf("server%d", g.starts), nil, argv...)
	ok := waitFor(10*time.Second, func() bool {
		if g.Proc.Exited() {
			return true
		}
		_, err := g.Status()
		return err == nil
	})
	if g.Proc.Exited() {
		t.Fatalf("server exited (code %d) at start:\n%s", g.Proc.ExitCode(), tail(g.Proc.Log(), 40))
	}
	if !ok {
		t.Fatalf("server status never answered within 10s:\n%s", tail(g.Proc.Log(), 40))
	}
}

// ServerStatus is `sallyport server status --json`.
type ServerStatus struct {
	CPUs     int            `json:"cpus"`
	CAs      map[string]int `json:"cas"`
	Sessions []Session      `json:"sessions"`
}

// Session is one entry of ServerStatus.
type Session struct {
	Device     string   `json:"device"`
	Serial     string   `json:"serial"`
	Lineage    string   `json:"lineage"`
	CA         string   `json:"ca"`
	Renewals   int      `json:"renewals"`
	User       string   `json:"user"`
	Groups     []string `json:"groups"`
	Address    string   `json:"address"`
	Address6   string   `json:"address6"`
	Path       string   `json:"path"`
	Since      string   `json:"since"`
	BytesIn    uint64   `json:"bytes_in"`
	BytesOut   uint64   `json:"bytes_out"`
	PacketsIn  uint64   `json:"packets_in"`
	PacketsOut uint64   `json:"packets_out"`
	Dropped    struct {
		Spoofed   uint64 `json:"spoofed"`
		Policy    uint64 `json:"policy"`
		NoFlow    uint64 `json:"no_flow"`
		QueueFull uint64 `json:"queue_full"`
		Malformed uint64 `json:"malformed"`
	} `json:"dropped"`
}

// Status runs `sallyport server status --socket S --json` in the gateway ns.
func (g *Gateway) Status() (ServerStatus, error) {
	var st ServerStatus
	cmd := exec.Command("ip", "netns", "exec", g.tp.GW, binPath, "server", "status", "--socket", g.Socket, "--json")
	out, err := cmd.Output()
	if err != nil {
		return st, fmt.Errorf("server status: %w: %s", err, out)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("server status JSON %q: %w", out, err)
	}
	return st, nil
}

// Session returns the session of device, if any.
func (g *Gateway) Session(device string) (Session, bool) {
	st, err := g.Status()
	if err != nil {
		return Session{}, false
	}
	for _, s := range st.Sessions {
		if s.Device == device {
			return s, true
		}
	}
	return Session{}, false
}

// Laptop is a running (or stopped) `sallyport up`.
type Laptop struct {
	tp     *Topo
	NS     string
	Conf   string
	Socket string
	Dev    string
	Proc   *Proc
}

// ClientStatus is `sallyport status --json`.
type ClientStatus struct {
	Connected    bool     `json:"connected"`
	DNS          []string `json:"dns"`
	DNSMode      string   `json:"dns_mode"`
	Server       string   `json:"server"`
	Address      string   `json:"address"`
	Address6     string   `json:"address6"`
	Routes       []string `json:"routes"`
	Since        string   `json:"since"`
	BytesIn      uint64   `json:"bytes_in"`
	BytesOut     uint64   `json:"bytes_out"`
	CertNotAfter string   `json:"cert_not_after"`
	CertDaysLeft float64  `json:"cert_days_left"`
	Path         string   `json:"path"`
	PathReason   string   `json:"path_reason"`
	MTU          int      `json:"mtu"`
	CertSerial   string   `json:"cert_serial"`
	Renewals     int      `json:"renewals"`
}

// clientConf returns the usual laptop config for a device of pki k.
func clientConf(k *PKI, device, driver, sockDir string) ClientConf {
	crt, key := k.Device(device)
	return ClientConf{
		Server: listen, ServerName: gwName, CA: k.CA(), Cert: crt, Key: key,
		Device: "sp0", Driver: driver, Socket: filepath.Join(sockDir, "lap-"+device+".sock"), Transport: "tls",
		// Reconnect quickly so restart tests stay short.
		Extra: "[reconnect]\nmin_delay = \"200ms\"\nmax_delay = \"2s\"\n",
	}
}

// startLaptop writes client.toml and runs `sallyport up` in namespace ns.
func (tp *Topo) startLaptop(ns, name string, cc ClientConf) *Laptop {
	tp.t.Helper()
	l := &Laptop{tp: tp, NS: ns, Conf: filepath.Join(tp.t.TempDir(), name+".toml"), Socket: cc.Socket, Dev: cc.Device}
	render(tp.t, clientTmpl, cc, l.Conf)
	l.Proc = tp.start(ns, "client-"+name, nil, binPath, "up", "-c", l.Conf)
	return l
}

// Status runs `sallyport status --socket S --json` in the laptop ns.
func (l *Laptop) Status() (ClientStatus, error) {
	var st ClientStatus
	out, err := exec.Command("ip", "netns", "exec", l.NS, binPath, "status", "--socket", l.Socket, "--json").Output()
	if err != nil {
		return st, fmt.Errorf("client status: %w: %s", err, out)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("client status JSON %q: %w", out, err)
	}
	return st, nil
}

// waitUp waits until the laptop reports connected and the route to the LAN
// is installed on its TUN device.
func (l *Laptop) waitUp(timeout time.Duration) ClientStatus {
	t := l.tp.t
	t.Helper()
	var st ClientStatus
	ok := waitFor(timeout, func() bool {
		if l.Proc.Exited() {
			return true
		}
		var err error
		st, err = l.Status()
		if err != nil || !st.Connected {
			return false
		}
		return countRoute(routesOn(l.NS, l.Dev), lanNet) >= 1
	})
	if l.Proc.Exited() {
		t.Fatalf("client %s exited (code %d) before the tunnel came up:\n%s", l.Proc.Name, l.Proc.ExitCode(), tail(l.Proc.Log(), 40))
	}
	if !ok {
		t.Fatalf("client %s not up within %v (last status %+v); routes on %s:\n%s", l.Proc.Name, timeout, st, l.Dev, strings.Join(routesOn(l.NS, l.Dev), "\n"))
	}
	return st
}

// ---------------------------------------------------------------- state checks

// routesOn lists `ip route show table all dev DEV` lines in ns: the
// laptop installs pushed routes in its own table (client/route.go).
func routesOn(ns, dev string) []string {
	out, err := tryRun("ip", "-n", ns, "route", "show", "table", "all", "dev", dev)
	if err != nil {
		return nil
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		// The kernel's own local/broadcast entries for the TUN's
		// addresses (table local) are not routes the client installed.
		if l = strings.TrimSpace(l); l != "" && !strings.Contains(l, "table local") {
			lines = append(lines, l)
		}
	}
	return lines
}

// countRoute counts route lines whose destination is dst.
func countRoute(lines []string, dst string) int {
	n := 0
	for _, l := range lines {
		if f := strings.Fields(l); len(f) > 0 && f[0] == dst {
			n++
		}
	}
	return n
}

// linkExists reports whether ns has a link called dev.
func linkExists(ns, dev string) bool {
	_, err := tryRun("ip", "-n", ns, "link", "show", "dev", dev)
	return err == nil
}

// leftovers describes tunnel state still present in ns: the TUN link, any
// address in the tunnel pool, and any route (any table) to the pool or via
// dev, and with lan also any route to the LAN (pushed routes on a laptop).
func leftovers(ns, dev string, lan bool) []string {
	var bad []string
	if linkExists(ns, dev) {
		bad = append(bad, "link "+dev+" exists")
	}
	if out, err := tryRun("ip", "-n", ns, "-4", "addr", "show"); err == nil {
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "inet 10.213.0.") {
				bad = append(bad, "address: "+strings.TrimSpace(l))
			}
		}
	}
	if out, err := tryRun("ip", "-n", ns, "-4", "route", "show", "table", "all"); err == nil {
		for _, l := range strings.Split(out, "\n") {
			if (lan && strings.Contains(l, "198.19.77.")) || strings.Contains(l, "10.213.0.") || strings.Contains(l, "dev "+dev+" ") {
				bad = append(bad, "route: "+strings.TrimSpace(l))
			}
		}
	}
	return bad
}
