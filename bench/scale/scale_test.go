package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki/ca"
)

func TestParseVmRSS(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"Name:\tsallyport\nVmPeak:\t 999 kB\nVmRSS:\t   12345 kB\nRssAnon: 1 kB\n", 12345 << 10, true},
		{"VmRSS: 0 kB\n", 0, true},
		{"Name: kthreadd\nState: S\n", 0, false},
		{"VmRSS: 12 MB\n", 0, false},
		{"VmRSS: lots kB\n", 0, false},
		{"VmRSS:\n", 0, false},
	} {
		got, err := parseVmRSS([]byte(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseVmRSS(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseStatTicks(t *testing.T) {
	// Fields 14 (utime) and 15 (stime) are 700 and 42; the command name has
	// spaces and a ')' to trip a naive split.
	line := "4242 (sally (port) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 700 42 0 0 20 0 9 0 1000 5000000 300 18446744073709551615\n"
	got, err := parseStatTicks([]byte(line))
	if err != nil || got != 742 {
		t.Errorf("parseStatTicks = %d, %v; want 742", got, err)
	}
	for _, bad := range []string{"", "4242 sallyport S 1", "4242 (x) S 1 2 3", "4242 (x) S 1 4242 4242 0 -1 4194560 100 0 0 0 seven 42 0"} {
		if _, err := parseStatTicks([]byte(bad)); err == nil {
			t.Errorf("parseStatTicks(%q) accepted", bad)
		}
	}
	// The real file of this process parses.
	if n, err := procCPUTicks(os.Getpid()); err != nil {
		t.Errorf("own /proc stat: %d, %v", n, err)
	}
	if n, err := procRSS(os.Getpid()); err != nil || n == 0 {
		t.Errorf("own /proc status: %d, %v", n, err)
	}
}

func TestBackoff(t *testing.T) {
	for a := 1; a < 12; a++ {
		want := min(100*time.Millisecond<<min(a-1, 5), maxBackoff)
		for range 50 {
			if d := backoff(a); d < want/2 || d > want {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", a, d, want/2, want)
			}
		}
	}
}

func TestErrorClass(t *testing.T) {
	for err, want := range map[error]string{
		&refusedError{reason: "capacity"}:                               "refused capacity",
		fmt.Errorf("x: %w", context.DeadlineExceeded):                   "timeout",
		errors.New("dial tcp 1.2.3.4:443: connect: connection refused"): "connection refused",
		errors.New("read config: read tcp: i/o timeout"):                "i/o timeout",
		errors.New(strings.Repeat("something long and unexpected ", 5)): strings.Repeat("something long and unexpected ", 5)[:60],
	} {
		if got := errorClass(err); got != want {
			t.Errorf("errorClass(%v) = %q, want %q", err, got, want)
		}
	}
}

func TestPerSessionAndFormat(t *testing.T) {
	if _, ok := perSession(100, 200, 5); ok {
		t.Error("RSS below the baseline gave a figure")
	}
	if _, ok := perSession(300, 200, 0); ok {
		t.Error("zero sessions gave a figure")
	}
	if got, _ := perSession(200<<20+10*60<<10, 200<<20, 10); got != 60<<10 {
		t.Errorf("perSession = %d", got)
	}
	r := &results{Devices: 10, CPUs: 2, BaselineRSS: 100 << 20, HeldRSS: 100<<20 + 10*100<<10, Held: 10, RampSeconds: 2,
		IdleSeconds: 30, IdleCPUSeconds: 1.5, HeldAfterIdle: 10, Storm: 4, StormSeconds: 1.25,
		CycleRates: []float64{50, 60}, CycleRSS: []uint64{110 << 20, 140 << 20}, HeldAfterCycles: 10,
		ChurnOps: 100, BareRate: 400, GatewayRate: 360, BareCPUms: 2, GatewayCPUms: 3, RampCPUSeconds: 0.05, Lost: map[string]int{"eof": 1, "close: timeout": 3}}
	out := r.format()
	for _, want := range []string{
		"sessions held", "10 / 10",
		"100.0 KiB/session (goal <= 64 KiB) MISS", // 1000 KiB over 10 sessions
		"3.00 s/min", // 1.5 s over 30 s
		"reconnect storm, 4 sessions", "1.2 s",
		"ratchet x1.27, goal <= 1.25) MISS",
		"360 / 400", "ratio 0.90 (goal >= 0.8) PASS",
		"3 close: timeout, 1 eof",
		"3.00 / 2.00 ms", "(x1.50)", "gateway CPU per session set up (ramp)", "5.00 ms", "ramp_cpu_ms_per_session=5.00",
		"scale devices=10 held=10 ", "churn_ratio=0.90",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "stopped early") {
		t.Error("report says stopped early")
	}
	r.Aborted = "gateway is gone"
	if out := r.format(); !strings.Contains(out, "run stopped early: gateway is gone") || !strings.Contains(out, `aborted="gateway is gone"`) {
		t.Errorf("aborted run:\n%s", out)
	}
}

func TestParseLoad(t *testing.T) {
	ok := []string{"--gateway", "a:1", "--bare", "a:2", "--server-name", "gw", "--dir", "d", "--devices", "10", "--gateway-pid", "1"}
	o, err := parseLoad(append(ok, "--source-addrs", "198.18.0.10, 198.18.0.11", "--max-rss-mb", "100"))
	if err != nil || len(o.locals) != 2 || o.maxRSS != 100<<20 || o.caFile != "d/ca.crt" || o.cycles != 4 || o.storm != 2000 {
		t.Fatalf("parseLoad: %+v, %v", o, err)
	}
	for _, extra := range [][]string{
		{"--devices", "0"}, {"--devices", "1000000"}, {"--concurrency", "0"}, {"--cycles", "101"},
		{"--storm", "-1"}, {"--timeout", "0s"}, {"--source-addrs", "nope"}, {"--clk-tck", "0"},
	} {
		if _, err := parseLoad(append(append([]string{}, ok...), extra...)); err == nil {
			t.Errorf("parseLoad accepted %v", extra)
		}
	}
	if _, err := parseLoad(ok[2:]); err == nil {
		t.Error("missing --gateway accepted")
	}
}

// bareFixture is a PKI with five issued devices (prefix t-) and a bare
// server on loopback.
type bareFixture struct {
	p    *ca.PKI
	addr string
}

func newBareFixture(t *testing.T) *bareFixture {
	t.Helper()
	dir := t.TempDir()
	p := ca.New(dir)
	if err := p.Init(ca.InitOptions{Key: ca.KeyEd25519, Intermediate: true}); err != nil {
		t.Fatal(err)
	}
	srv, err := p.IssueServer(ca.IssueOptions{Name: "gw.test", IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Key: ca.KeyEd25519})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := runIssue([]string{"--dir", dir, "--devices", "5", "--key", "ed25519", "--prefix", "t-"}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "issued=5 ") {
		t.Errorf("issue output %q", out.String())
	}
	if err := runIssue([]string{"--dir", dir, "--devices", "5", "--prefix", "t-"}, &out); err == nil {
		t.Error("issuing the same devices twice succeeded")
	}
	conf, err := bareTLS(srv.CertPath, srv.KeyPath, p.Path("ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- serveBare(ctx, ln, conf) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serveBare: %v", err)
		}
	})
	return &bareFixture{p: p, addr: ln.Addr().String()}
}

// noLeaks fails the test if goroutines started after base are still
// running a few seconds after the test's own cleanup.
func noLeaks(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		var n int
		for range 50 {
			if n = runtime.NumGoroutine(); n <= base {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines left (had %d):\n%s", n, base, buf[:runtime.Stack(buf, true)])
	})
}

// TestIssueAndBareSessions issues devices through the store, then runs
// sessions and churn against the bare server on loopback.
func TestIssueAndBareSessions(t *testing.T) {
	noLeaks(t)
	fx := newBareFixture(t)
	p := fx.p
	ctx := t.Context()
	devs, err := loadDevices(p.Dir, "t-", 5)
	if err != nil {
		t.Fatal(err)
	}
	d, err := newDialer(fx.addr, "gw.test", p.Path("ca.crt"), nil)
	if err != nil {
		t.Fatal(err)
	}
	f := newFleet(d, devs)
	for i := range devs {
		if _, err := f.connect(ctx, i, 1); err != nil {
			t.Fatalf("connect %s: %v", devs[i].name, err)
		}
	}
	if f.count() != 5 {
		t.Errorf("%d sessions live", f.count())
	}
	s := f.live[0]
	if s.cfg.MTU != 1500 || s.cfg.Keepalive != 10*time.Second {
		t.Errorf("config from bare server: %+v", s.cfg)
	}
	for i := range devs {
		f.disconnect(i, i%2 == 0)
	}
	if f.count() != 0 || len(f.lost) != 0 {
		t.Errorf("after disconnect: %d live, lost %v", f.count(), f.lost)
	}
	if ok, _ := churn(ctx, d, devs, 12, 3); ok != 12 {
		t.Errorf("churn: %d of 12 succeeded", ok)
	}
	// A device the CA never signed is refused by the TLS handshake.
	other := ca.New(t.TempDir())
	if err := other.Init(ca.InitOptions{Key: ca.KeyEd25519}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.IssueDevice(ca.IssueOptions{Name: "t-00000", Key: ca.KeyEd25519}); err != nil {
		t.Fatal(err)
	}
	stranger, err := loadDevices(other.Dir, "t-", 1)
	if err != nil {
		t.Fatal(err)
	}
	if s, err := d.connect(ctx, stranger[0]); err == nil {
		s.closeNow()
		t.Error("bare server took a device from another CA")
	}
}

// TestLoadPhases runs every phase of a load run, small, with the bare
// server standing in for the gateway and this process for its pid.
func TestLoadPhases(t *testing.T) {
	noLeaks(t)
	fx := newBareFixture(t)
	var out, progress bytes.Buffer
	err := runLoad(t.Context(), []string{"--gateway", fx.addr, "--bare", fx.addr, "--server-name", "gw.test",
		"--dir", fx.p.Dir, "--prefix", "t-", "--devices", "5", "--gateway-pid", fmt.Sprint(os.Getpid()),
		"--bare-pid", fmt.Sprint(os.Getpid()), "--concurrency", "2", "--idle", "200ms", "--settle", "0s",
		"--storm", "3", "--cycles", "2", "--churn", "6", "--timeout", "60s", "--source-addrs", "127.0.0.1", "--renew-window", "100ms"}, &out, &progress)
	if err != nil {
		t.Fatalf("runLoad: %v\n%s\n%s", err, out.String(), progress.String())
	}
	report := out.String()
	for _, want := range []string{"scale devices=5 ", " held=5 ", " storm_sessions=3 ", " cycles=2 ", "churn_ratio=", "0 failed", "(5 sessions held after)",
		"renewal storm", "(the gateway offers no renewal)"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	for _, bad := range []string{"stopped early", "sessions the gateway ended", "failed connect attempts"} {
		if strings.Contains(report, bad) {
			t.Errorf("report has %q:\n%s", bad, report)
		}
	}
	// A gateway pid that does not exist stops the run with a clear reason.
	out.Reset()
	err = runLoad(t.Context(), []string{"--gateway", fx.addr, "--bare", fx.addr, "--server-name", "gw.test",
		"--dir", fx.p.Dir, "--prefix", "t-", "--devices", "2", "--gateway-pid", "999999999", "--idle", "0s", "--settle", "0s",
		"--cycles", "0", "--storm", "0", "--churn", "0"}, &out, &progress)
	if err == nil || !strings.Contains(out.String(), "run stopped early") {
		t.Errorf("missing gateway: %v\n%s", err, out.String())
	}
}

// TestParseAttack: the attack's options are checked and bounded.
func TestParseAttack(t *testing.T) {
	ok := []string{"--gateway", "127.0.0.1:8443", "--server-name", "gw", "--dir", "/pki"}
	o, err := parseAttack(append(ok, "--attack-addrs", "127.0.0.2, 127.0.0.3"))
	if err != nil || len(o.sources) != 2 || o.silent != 16 || o.drip != 16 || o.caFile != "/pki/ca.crt" || o.laptop.String() != "127.0.0.1" {
		t.Fatalf("parseAttack: %+v %v", o, err)
	}
	for _, bad := range [][]string{
		{"--attack-addrs", "nope"}, {"--laptop-addr", "x"}, {"--silent", "5000"}, {"--trials", "0"},
		{"--trials", "101"}, {"--reopen-pause", "0s"}, {"--timeout", "0s"},
	} {
		if _, err := parseAttack(append(ok, bad...)); err == nil {
			t.Errorf("parseAttack accepted %v", bad)
		}
	}
	if _, err := parseAttack([]string{"--gateway", "x:1"}); err == nil {
		t.Error("parseAttack without --server-name and --dir")
	}
}
