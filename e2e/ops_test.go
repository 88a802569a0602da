package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testenv"
)

// Operations (issue 11): metrics, policy as code, live push, drain.

const metricsAddr = "127.0.0.1:9580"

// helperHTTPGet prints "status=N" and then the body of GET url.
func helperHTTPGet(url string) error {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	fmt.Printf("status=%d\n%s", resp.StatusCode, b)
	return nil
}

// scrapeMetrics fetches path from the gateway's metrics listener.
func (tp *Topo) scrapeMetrics(path string) (status int, body string) {
	tp.t.Helper()
	out, _ := tp.helperRun(10*time.Second, tp.GW, "httpget", "http://"+metricsAddr+path)
	first, rest, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(first, "status=") {
		tp.t.Fatalf("GET %s: %s", path, out)
	}
	return atoi(strings.TrimPrefix(first, "status="), 0), rest
}

// sample is the value of the series (name with labels, exactly as
// exposed), or -1.
func sample(text, series string) float64 {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// TestMetrics: /metrics scraped during a session shows it, bytes moving
// and a refused handshake under its reason; the text passes promtool.
func TestMetrics(t *testing.T) {
	requireRoot(t)
	promtool := testenv.Command(t, "promtool")
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	k.Issue("carol", []string{"sales"}) // matches no policy
	sock := shortTempDir(t)
	sc := defaultServerConf(k, "wireguard", sock, restrictive)
	sc.Extra = "[metrics]\nlisten = " + strconv.Quote(metricsAddr) + "\n"
	gw := tp.startGateway(sc)
	alice := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	alice.waitUp(15 * time.Second)
	if got := tp.ping(tp.Lap, lanHost, 3); got != 3 {
		t.Fatalf("ping through the tunnel: %d/3", got)
	}
	crt, key := k.Device("carol")
	hold := filepath.Join(t.TempDir(), "go")
	if err := os.WriteFile(hold, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ := tp.helperRun(15*time.Second, tp.Lap, "tlsdial", listen, gwName, k.CA(), crt, key, hold)
	if field(out, "close_reason") != "no-policy" {
		t.Fatalf("carol: %s, want close reason no-policy", out)
	}

	code, text := tp.scrapeMetrics("/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d\n%s", code, text)
	}
	for series, min := range map[string]float64{
		"sallyport_sessions": 1,
		`sallyport_handshakes_total{reason="no-policy",result="refused"}`: 1,
		`sallyport_handshakes_total{reason="",result="accepted"}`:         1,
		`sallyport_tunnel_bytes_total{direction="in"}`:                    3 * 84,
		`sallyport_tunnel_bytes_total{direction="out"}`:                   3 * 84,
		`sallyport_tunnel_packets_total{direction="in"}`:                  3,
		"sallyport_pool_addresses_in_use":                                 1,
		"sallyport_cert_expiry_shortest_seconds":                          86400,
	} {
		if v := sample(text, series); v < min {
			t.Errorf("%s = %v, want >= %v", series, v, min)
		}
	}
	if sample(text, "sallyport_sessions") != 1 {
		t.Errorf("sallyport_sessions = %v, want 1", sample(text, "sallyport_sessions"))
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	if code, _ := tp.scrapeMetrics("/"); code != 404 {
		t.Errorf("GET / on the metrics listener: %d, want 404 (only /metrics is served)", code)
	}
	_ = gw
}

// demoPolicy is scripts/demo.sh's policy.
var demoPolicy = Policy{
	Name:   "engineering",
	Match:  map[string][]string{"ou": {"eng"}},
	Allow:  []string{lanNet + " tcp/8080", lanNet + " icmp"},
	Routes: []string{lanNet},
}

// spRun runs the sallyport binary (no namespace) and returns its output
// and exit code.
func spRun(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(requireBin(t), args...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("sallyport %v: %v", args, err)
	}
	return string(out), code
}

// TestPolicyAsCode: policy explain and policy test give the demo's
// verdicts offline (a port outside policy, a no-policy device), policy
// test exits 1 on a wrong expectation, and server check validates the
// config and the files it names.
func TestPolicyAsCode(t *testing.T) {
	requireBin(t)
	t.Parallel()
	k := newPKI(t, "Test CA")
	k.ServerCert(gwName, "--ip", gwAddr)
	k.Issue("alice", []string{"eng"})
	k.Issue("dave", []string{"sales"})
	conf := filepath.Join(t.TempDir(), "server.toml")
	render(t, serverTmpl, defaultServerConf(k, "wireguard", t.TempDir(), demoPolicy), conf)
	aliceCrt, _ := k.Device("alice")
	daveCrt, _ := k.Device("dave")

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--cert", aliceCrt, lanHost + ":8080/tcp"}, 0, `allowed by rule "198.19.77.0/24 tcp/8080" of policy "engineering"`},
		{[]string{"--cert", aliceCrt, lanHost + ":8081/tcp"}, 1, `no allow rule of ["engineering"] admits 198.19.77.10:8081/tcp`},
		{[]string{"--device", "alice", "--ou", "eng", lanHost + "/icmp"}, 0, "verdict: allow"},
		{[]string{"--cert", daveCrt, lanHost + ":8080/tcp"}, 1, "no policy matches this identity"},
		{[]string{"--device", "dave", "--ou", "sales", "--ou", "eng", lanHost + ":8080/tcp"}, 0, `yes ou ["eng"] against ["sales" "eng"]`},
		{[]string{"--device", "x", lanHost + ":8080"}, 2, "needs a protocol"},
	} {
		out, code := spRun(t, append([]string{"policy", "explain", "-c", conf}, tc.args...)...)
		if code != tc.code || !strings.Contains(out, tc.want) {
			t.Errorf("policy explain %v: exit %d, want %d and %q:\n%s", tc.args, code, tc.code, tc.want, out)
		}
	}

	cases := filepath.Join(filepath.Dir(aliceCrt), "cases.toml")
	good := `
[[case]]
name = "alice web"
cert = "alice.crt"
dst = "198.19.77.10:8080/tcp"
want = "allow"
policies = ["engineering"]

[[case]]
name = "alice other port"
cert = "alice.crt"
dst = "198.19.77.10:8081/tcp"
want = "deny"

[[case]]
name = "dave no policy"
device = "dave"
ou = ["sales"]
dst = "198.19.77.10:8080/tcp"
want = "deny"
policies = []
`
	if err := os.WriteFile(cases, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := spRun(t, "policy", "test", "-c", conf, cases); code != 0 || !strings.Contains(out, "3 cases, 0 failed") {
		t.Errorf("policy test, all right: exit %d\n%s", code, out)
	}
	wrong := strings.Replace(good, "8081/tcp\"\nwant = \"deny\"", "8081/tcp\"\nwant = \"allow\"", 1)
	if err := os.WriteFile(cases, []byte(wrong), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code := spRun(t, "policy", "test", "-c", conf, cases)
	if code != 1 || !strings.Contains(out, "FAIL  alice other port") || !strings.Contains(out, "- want allow\n      + got  deny") {
		t.Errorf("policy test, one wrong expectation: exit %d, want 1 and a diff:\n%s", code, out)
	}

	if out, code := spRun(t, "server", "check", "-c", conf); code != 0 || !strings.Contains(out, "ok (1 policy: ") {
		t.Errorf("server check of a good config: exit %d\n%s", code, out)
	}
	_, key := k.Server(gwName)
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := spRun(t, "server", "check", "-c", conf); code != 1 || !strings.Contains(out, "tls.key") {
		t.Errorf("server check with a world-readable gateway key: exit %d, want 1 naming tls.key\n%s", code, out)
	}
}

// TestLivePush: a reload that adds a route reaches the live laptop: the
// route appears and a ping to the new prefix works, without a reconnect.
func TestLivePush(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	const newHost, newNet = "198.19.88.10", "198.19.88.0/24"
	run(t, "ip", "-n", tp.LAN, "addr", "add", newHost+"/24", "dev", "eth0")
	run(t, "ip", "-n", tp.GW, "route", "add", newNet, "via", lanHost)
	k := stdPKI(t)
	sock := shortTempDir(t)
	sc := defaultServerConf(k, "wireguard", sock, restrictive)
	gw := tp.startGateway(sc)
	alice := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	alice.waitUp(15 * time.Second)
	if got := tp.ping(tp.Lap, newHost, 1); got != 0 {
		t.Fatalf("ping to %s before the reload answered", newHost)
	}
	before, _ := gw.Session("alice")

	wider := restrictive
	wider.Allow = append(append([]string{}, restrictive.Allow...), newNet+" icmp")
	wider.Routes = []string{lanNet, newNet}
	sc.Policies = []Policy{wider}
	render(t, serverTmpl, sc, gw.Conf)
	if !waitFor(10*time.Second, func() bool { return countRoute(routesOn(tp.Lap, alice.Dev), newNet) == 1 }) {
		t.Fatalf("the new route never reached the laptop; routes: %v\ngateway:\n%s\nlaptop:\n%s", routesOn(tp.Lap, alice.Dev),
			tail(gw.Proc.Err(), 10), tail(alice.Proc.Err(), 10))
	}
	if got := tp.ping(tp.Lap, newHost, 3); got != 3 {
		t.Fatalf("ping to the pushed prefix: %d/3", got)
	}
	if st, _ := alice.Status(); !slices.Contains(st.Routes, newNet) {
		t.Errorf("laptop status routes %v lack %s", st.Routes, newNet)
	}
	after, ok := gw.Session("alice")
	if !ok || after.Since != before.Since || strings.Count(alice.Proc.Err(), `msg="tunnel up"`) != 1 {
		t.Fatalf("the laptop reconnected for the push (since %s -> %s)", before.Since, after.Since)
	}
	if !strings.Contains(gw.Proc.Err(), "new config pushed to the live session") {
		t.Errorf("gateway did not log the push:\n%s", tail(gw.Proc.Err(), 10))
	}
}

// jsonLines returns the gateway's JSON log records with msg == msg.
func jsonLines(t *testing.T, log, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(log, "\n") {
		if strings.TrimSpace(l) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// TestAuditLog: with [log] format = "json" and log_drops = true, session
// up, refused, re-checked, closed and dropped-packet lines are JSON and
// carry the identity, policies and reason.
func TestAuditLog(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	k.Issue("carol", []string{"sales"})
	sock := shortTempDir(t)
	sc := defaultServerConf(k, "wireguard", sock, restrictive)
	sc.Extra = "[log]\nformat = \"json\"\nlog_drops = true\n"
	gw := tp.startGateway(sc)
	alice := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	alice.waitUp(15 * time.Second)
	crt, key := k.Device("carol")
	hold := filepath.Join(t.TempDir(), "go")
	if err := os.WriteFile(hold, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tp.helperRun(15*time.Second, tp.Lap, "tlsdial", listen, gwName, k.CA(), crt, key, hold)
	// udp/5353 is outside the policy: dropped, and logged.
	tp.helperRun(10*time.Second, tp.Lap, "udpsend", lanHost+":5353", "x")

	identity := func(m map[string]any, device string) bool {
		for _, key := range []string{"user", "groups", "issuer", "serial", "fingerprint"} {
			if _, ok := m[key]; !ok {
				return false
			}
		}
		return m["device"] == device && m["issuer"] != "" && m["fingerprint"] != ""
	}
	var up, refused, drops []map[string]any
	if !waitFor(15*time.Second, func() bool {
		log := gw.Proc.Err()
		up, refused, drops = jsonLines(t, log, "session up"), jsonLines(t, log, "handshake refused"), jsonLines(t, log, "packets dropped")
		return len(up) == 1 && len(refused) == 1 && len(drops) >= 1
	}) {
		t.Fatalf("up %d, refused %d, drop lines %d:\n%s", len(up), len(refused), len(drops), tail(gw.Proc.Err(), 20))
	}
	if !identity(up[0], "alice") || fmt.Sprint(up[0]["policies"]) != "[engineering]" || fmt.Sprint(up[0]["groups"]) != "[eng]" {
		t.Errorf("session up line %v", up[0])
	}
	if !identity(refused[0], "carol") || refused[0]["reason"] != "no-policy" {
		t.Errorf("handshake refused line %v", refused[0])
	}
	if !identity(drops[0], "alice") || drops[0]["policy"] == nil {
		t.Errorf("packets dropped line %v", drops[0])
	}

	gw.tp.sp(tp.GW, "server", "kick", "--socket", gw.Socket, "alice")
	if !waitFor(5*time.Second, func() bool { return len(jsonLines(t, gw.Proc.Err(), "session closed")) == 1 }) {
		t.Fatalf("no session closed line:\n%s", tail(gw.Proc.Err(), 10))
	}
	closed := jsonLines(t, gw.Proc.Err(), "session closed")[0]
	if !identity(closed, "alice") || closed["reason"] != "kicked" || fmt.Sprint(closed["policies"]) != "[engineering]" {
		t.Errorf("session closed line %v", closed)
	}
}

// TestDrain: with two gateways in the laptop's servers, draining the first
// moves the laptop to the second within a few seconds, traffic resumes,
// and the drained gateway exits 0.
func TestDrain(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	sock := shortTempDir(t)
	sc1 := defaultServerConf(k, "wireguard", sock, restrictive)
	sc1.Extra = "drain_timeout = \"5s\"\n"
	gw1 := tp.startGateway(sc1)
	sc2 := defaultServerConf(k, "wireguard", sock, restrictive)
	const listen2 = gwAddr + ":8444"
	sc2.Listen, sc2.Device, sc2.Pool, sc2.Socket = listen2, "sp1", "10.214.0.0/24", filepath.Join(sock, "gw2.sock")
	gw2 := tp.startGateway(sc2)

	cc := clientConf(k, "alice", "wireguard", sock)
	lap := tp.startLaptop(tp.Lap, "alice", cc)
	conf, _ := os.ReadFile(lap.Conf)
	// Two gateways: rewrite server = "..." as servers = [first, second].
	_ = lap.Proc.Stop(5 * time.Second)
	two := strings.Replace(string(conf), "server = "+strconv.Quote(listen), "servers = ["+strconv.Quote(listen)+", "+strconv.Quote(listen2)+"]", 1)
	if two == string(conf) {
		t.Fatalf("client config has no server line:\n%s", conf)
	}
	if err := os.WriteFile(lap.Conf, []byte(two), 0o600); err != nil {
		t.Fatal(err)
	}
	lap.Proc = tp.start(tp.Lap, "client-alice2", nil, binPath, "up", "-c", lap.Conf)
	st := lap.waitUp(15 * time.Second)
	if st.Server != listen {
		t.Fatalf("laptop on %s, want the first gateway %s", st.Server, listen)
	}
	if got := tp.ping(tp.Lap, lanHost, 2); got != 2 {
		t.Fatalf("ping via the first gateway: %d/2", got)
	}

	start := time.Now()
	if out, err := tp.sp(tp.GW, "server", "drain", "--socket", gw1.Socket); err != nil || !strings.Contains(out, "draining 1 sessions") {
		t.Fatalf("server drain: %v\n%s", err, out)
	}
	if !waitFor(10*time.Second, func() bool { st, err := lap.Status(); return err == nil && st.Connected && st.Server == listen2 }) {
		st, _ := lap.Status()
		t.Fatalf("laptop did not move to the second gateway (status %+v):\n%s", st, tail(lap.Proc.Err(), 15))
	}
	t.Logf("laptop on the second gateway %v after the drain", time.Since(start).Round(time.Millisecond))
	if !waitFor(10*time.Second, func() bool { return tp.ping(tp.Lap, lanHost, 1) == 1 }) {
		t.Fatal("no traffic through the second gateway")
	}
	if !gw1.Proc.Wait(10 * time.Second) {
		t.Fatalf("the drained gateway did not exit:\n%s", tail(gw1.Proc.Err(), 10))
	}
	if code := gw1.Proc.ExitCode(); code != 0 || !strings.Contains(gw1.Proc.Err(), "reason=drain") || !strings.Contains(gw1.Proc.Err(), `msg="gateway drained"`) {
		t.Errorf("drained gateway exit %d, log:\n%s", code, tail(gw1.Proc.Err(), 15))
	}
	if _, ok := gw2.Session("alice"); !ok {
		t.Error("no session on the second gateway")
	}
}

// TestAdminGroup: with [admin] group, a member runs `server status`
// without root; kick and drain stay root-only; a user outside the group
// cannot even connect.
func TestAdminGroup(t *testing.T) {
	requireRoot(t)
	setpriv := testenv.Command(t, "setpriv")
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	sock := shortTempDir(t)
	sc := defaultServerConf(k, "wireguard", sock, restrictive)
	sc.Socket = filepath.Join(sock, "adm", "gw.sock")
	if err := os.Chmod(sock, 0o711); err != nil { // as /run is: others may pass through
		t.Fatal(err)
	}
	gw := tp.startGateway(sc)
	// [admin] group: restart with it (the template has no key for it).
	b, _ := os.ReadFile(gw.Conf)
	withGroup := strings.Replace(string(b), "[admin]\n", "[admin]\ngroup = \"nogroup\"\n", 1)
	if err := os.WriteFile(gw.Conf, []byte(withGroup), 0o600); err != nil {
		t.Fatal(err)
	}
	gw.Proc.Stop(10 * time.Second)
	// Without CAP_CHOWN (the unit grants none) the gateway may give its
	// socket only to a group it is in: the unit needs SupplementaryGroups=.
	gw.Groups = "nogroup"
	gw.Start()
	alice := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	alice.waitUp(15 * time.Second)

	as := func(gid string, args ...string) (string, error) {
		return tryRun("ip", append([]string{"netns", "exec", tp.GW, setpriv, "--reuid=nobody", "--regid=" + gid, "--clear-groups", binPath,
			"server"}, append(args, "--socket", gw.Socket)...)...)
	}
	if out, err := as("nogroup", "status"); err != nil || !strings.Contains(out, "alice") {
		t.Errorf("status as a member of the admin group: %v\n%s", err, out)
	}
	for _, cmd := range [][]string{{"kick", "alice"}, {"drain"}, {"reload"}} {
		if out, err := as("nogroup", cmd...); err == nil || !strings.Contains(out, "permission denied") {
			t.Errorf("%v as a member of the admin group: %v, want permission denied\n%s", cmd, err, out)
		}
	}
	if out, err := as("12345", "status"); err == nil || !strings.Contains(strings.ToLower(out), "permission denied") {
		t.Errorf("status from outside the group: %v, want the socket refused\n%s", err, out)
	}
	if _, ok := gw.Session("alice"); !ok {
		t.Error("alice's session is gone")
	}
}
