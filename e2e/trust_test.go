package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestHelloAfterRevocation is the thief's half-open connection: a device
// completes TLS while still valid, holds its hello back, is revoked, then
// sends the hello. It must get no session, and must be told within a
// second of its hello.
func TestHelloAfterRevocation(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	sock := shortTempDir(t)
	sc := defaultServerConf(k, "wireguard", sock)
	gw := tp.startGateway(sc)
	crt, key := k.Device("alice")
	hold := filepath.Join(t.TempDir(), "send-hello")
	h := tp.helper(tp.Lap, "tlsdial", listen, gwName, k.CA(), crt, key, hold)
	if !waitFor(10*time.Second, func() bool { return field(h.Out(), "tls") == "done" }) {
		t.Fatalf("TLS handshake did not complete: %s", h.Log())
	}
	k.Revoke("alice")
	if !waitFor(5*time.Second, func() bool { return strings.Contains(gw.Proc.Err(), `msg="configuration reloaded"`) }) {
		t.Fatalf("gateway did not reload the CRL:\n%s", tail(gw.Proc.Log(), 20))
	}
	if err := os.WriteFile(hold, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if !h.Wait(15 * time.Second) {
		t.Fatalf("helper did not finish: %s", h.Log())
	}
	out := h.Out()
	frames := field(out, "frames")
	if !strings.HasSuffix(frames, "close") || field(out, "close_reason") != "revoked" {
		t.Fatalf("held-back hello after revocation: %s (want the stream to end with close reason revoked)", out)
	}
	if ms := atoi(field(out, "ended_ms"), 99999); ms > 1000 {
		t.Errorf("the session was refused %d ms after the hello, want within a second", ms)
	}
	if _, ok := gw.Session("alice"); ok {
		t.Fatal("the revoked device holds a session")
	}
}

// TestCASwap: replacing client_ca cuts the live sessions of devices whose
// chain no longer verifies, and the laptop then tells its employee.
func TestCASwap(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	sock := shortTempDir(t)
	sc := defaultServerConf(k, "wireguard", sock)
	// The gateway's own copy of the CA bundle, so the swap does not touch
	// the PKI the laptop trusts the gateway with.
	caCopy := filepath.Join(t.TempDir(), "client-ca.crt")
	replaceFile(t, k.CA(), caCopy)
	crlCopy := filepath.Join(t.TempDir(), "crl.pem")
	replaceFile(t, k.CRL(), crlCopy)
	sc.ClientCA, sc.CRL = caCopy, crlCopy
	gw := tp.startGateway(sc)
	alice := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	alice.waitUp(15 * time.Second)

	other := newPKI(t, "Other CA")
	start := time.Now()
	replaceFile(t, other.CA(), caCopy) // a new CA comes with its own CRL
	replaceFile(t, other.CRL(), crlCopy)
	if !waitFor(5*time.Second, func() bool { _, ok := gw.Session("alice"); return !ok }) {
		t.Fatal("alice's session survived the replacement of client_ca")
	}
	t.Logf("session cut %v after the CA file changed", time.Since(start).Round(time.Millisecond))
	closed := regexp.MustCompile(`msg="session closed".*`)
	if !waitFor(2*time.Second, func() bool {
		for _, l := range closed.FindAllString(gw.Proc.Err(), -1) {
			if hasKV(l, "device", "alice") && hasKV(l, "reason", "unknown-ca") {
				return true
			}
		}
		return false
	}) {
		t.Errorf("no session closed device=alice reason=unknown-ca in the gateway log:\n%s", tail(gw.Proc.Err(), 10))
	}
	// The laptop's reconnect is refused (TLS alert) and it says so.
	var msg string
	if !waitFor(10*time.Second, func() bool { msg = laptopMessage(t, alice); return msg != "" }) {
		t.Fatalf("laptop status shows no refusal after the CA swap")
	}
	if !strings.Contains(msg, "contact your admin") {
		t.Errorf("laptop refusal message %q", msg)
	}
}

// TestPolicyCutLive: a reload that removes a destination from the policy
// is enforced on the live session, without a reconnect.
func TestPolicyCutLive(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	sock := shortTempDir(t)
	sc := defaultServerConf(k, "wireguard", sock, restrictive)
	gw := tp.startGateway(sc)
	alice := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	alice.waitUp(15 * time.Second)
	sink := tp.helper(tp.LAN, "tcpsink", lanHost+":5201")
	waitReady(t, sink)
	if got := tp.ping(tp.Lap, lanHost, 2); got != 2 {
		t.Fatalf("ping before the policy cut: %d/2", got)
	}
	before, _ := gw.Session("alice")

	cut := restrictive
	cut.Allow = []string{lanNet + " tcp/5201"} // icmp removed
	sc.Policies = []Policy{cut}
	render(t, serverTmpl, sc, gw.Conf)
	if !waitFor(5*time.Second, func() bool { return strings.Count(gw.Proc.Err(), `msg="configuration reloaded"`) >= 1 }) {
		t.Fatalf("gateway did not reload:\n%s", tail(gw.Proc.Log(), 20))
	}
	if got := tp.ping(tp.Lap, lanHost, 2); got != 0 {
		t.Fatalf("ping after icmp was removed from the policy: %d/2 answered", got)
	}
	tp.transfer(tp.Lap, lanHost+":5201", 1<<20) // still allowed
	after, ok := gw.Session("alice")
	if !ok || after.Since != before.Since {
		t.Fatalf("the session was replaced by the reload (since %s -> %s)", before.Since, after.Since)
	}
	if after.Dropped.Policy < 2 {
		t.Errorf("policy drops %d after the cut, want the pings counted", after.Dropped.Policy)
	}
}

// replaceFile replaces to with a copy of from by rename, as an admin's
// deploy tool would (the gateway never sees half a file).
func replaceFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	tmp := to + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, to); err != nil {
		t.Fatal(err)
	}
}

// laptopMessage is the refusal sentence `sallyport status` shows ("" when
// none).
func laptopMessage(t *testing.T, l *Laptop) string {
	out, err := exec.Command("ip", "netns", "exec", l.NS, binPath, "status", "--socket", l.Socket, "--json").Output()
	if err != nil {
		return ""
	}
	var st struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(out, &st)
	return st.Message
}

// TestPoolExhaustedShown: a device that finds no free tunnel address is
// told so, and its employee reads it in `sallyport status`.
func TestPoolExhaustedShown(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, true)
	k := stdPKI(t)
	sock := shortTempDir(t)
	sc := defaultServerConf(k, "wireguard", sock)
	sc.Pool = strings.TrimSuffix(poolNet, "/24") + "/30" // the gateway and one device
	gw := tp.startGateway(sc)
	alice := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	alice.waitUp(15 * time.Second)
	bob := tp.startLaptop(tp.Lap2, "bob", clientConf(k, "bob", "wireguard", sock))
	var msg string
	if !waitFor(10*time.Second, func() bool { msg = laptopMessage(t, bob); return msg != "" }) {
		t.Fatalf("bob's status shows no refusal with the pool full:\n%s", tail(bob.Proc.Log(), 10))
	}
	if !strings.Contains(msg, "no free tunnel address") {
		t.Errorf("bob's refusal message %q does not say the pool is full", msg)
	}
	found := false
	for _, l := range refusals(gw.Proc.Err()) {
		found = found || (hasKV(l, "reason", "pool-exhausted") && hasKV(l, "device", "bob"))
	}
	if !found {
		t.Errorf("no refusal reason=pool-exhausted device=bob in the gateway log:\n%s", tail(gw.Proc.Err(), 10))
	}
	if _, ok := gw.Session("alice"); !ok {
		t.Error("alice lost her session")
	}
}

// TestGatewayCertCauseShown: a laptop whose file expects another gateway
// name, or trusts another CA, says which in `sallyport status` (the names
// the certificate is valid for and the one expected; "the CA in your file
// did not sign this gateway"), and the gateway logs the refusal as its own
// certificate's (reason=gateway-cert-rejected), not a failed handshake
// that reads as if the device's certificate were bad.
func TestGatewayCertCauseShown(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, true)
	k := stdPKI(t)
	sock := shortTempDir(t)
	gw := tp.startGateway(defaultServerConf(k, "wireguard", sock))
	other := newPKI(t, "Other CA")

	// The laptop's default transport, auto: the datagram path (QUIC) first,
	// the TLS stream beside it. The cause must come through either way.
	wrongName := clientConf(k, "alice", "wireguard", sock)
	wrongName.ServerName, wrongName.Transport = "vpn.example", "auto"
	wrongCA := clientConf(k, "bob", "wireguard", sock)
	wrongCA.CA, wrongCA.Transport = other.CA(), "auto"
	for _, tt := range []struct {
		ns, name string
		cc       ClientConf
		want     string
	}{
		{tp.Lap, "alice", wrongName, "not connected: the gateway's certificate is valid for " + gwName + ", " + gwAddr + ", not vpn.example (server_name in your file)"},
		{tp.Lap2, "bob", wrongCA, `not connected: the CA in your file did not sign this gateway's certificate (issued by "Test CA")`},
	} {
		l := tp.startLaptop(tt.ns, tt.name, tt.cc)
		var msg string
		if !waitFor(10*time.Second, func() bool { msg = laptopMessage(t, l); return msg != "" }) {
			t.Fatalf("%s: status shows no reason:\n%s", tt.name, tail(l.Proc.Log(), 10))
		}
		if !strings.HasPrefix(msg, tt.want) {
			t.Errorf("%s: status message %q\nwant it to start with %q", tt.name, msg, tt.want)
		}
		out, _ := exec.Command("ip", "netns", "exec", l.NS, binPath, "status", "--socket", l.Socket).CombinedOutput()
		if !strings.Contains(string(out), tt.want) {
			t.Errorf("%s: sallyport status does not show the cause:\n%s", tt.name, out)
		}
		if !strings.Contains(l.Proc.Err(), strings.ReplaceAll(tt.want, `"`, `\"`)) { // as logfmt quotes it
			t.Errorf("%s: the laptop's log does not name the cause:\n%s", tt.name, tail(l.Proc.Err(), 5))
		}
	}
	n := 0
	for _, l := range refusals(gw.Proc.Err()) {
		if hasKV(l, "reason", "gateway-cert-rejected") && strings.Contains(l, "the device refused this gateway's certificate") {
			n++
		}
		if hasKV(l, "reason", "handshake-failed") {
			t.Errorf("logged as a failed handshake: %s", l)
		}
	}
	if n < 2 {
		t.Errorf("%d refusals with reason=gateway-cert-rejected in the gateway log, want one per laptop at least:\n%s", n, tail(gw.Proc.Err(), 10))
	}
}
