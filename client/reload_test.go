package client

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// profileTOML writes the harness client's config as a profile file, as
// `pki bundle` would (PEM inline), with the gateways and extra TOML given.
func profileTOML(t *testing.T, e *testEnv, servers []string, certPEM, keyPEM, extra string, cpus ...int) {
	t.Helper()
	q := make([]string, len(servers))
	for i, s := range servers {
		q[i] = strconv.Quote(s)
	}
	text := fmt.Sprintf("servers = [%s]\nserver_name = \"gw.test\"\n[tls]\nca_pem = %q\ncert_pem = %q\nkey_pem = %q\n"+
		"[tunnel]\ndevice = \"fake0\"\ncpus = %d\n[admin]\nsocket = %q\n%s",
		strings.Join(q, ", "), e.ca.pem, certPEM, keyPEM, append(cpus, runtime.NumCPU())[0], e.c.cfg.Admin.Socket, extra)
	if !strings.Contains(extra, "[reconnect]") {
		text += "[reconnect]\nmin_delay = \"1ms\"\nmax_delay = \"20ms\"\nrefused_delay = \"1h\"\n"
	}
	if err := os.WriteFile(e.c.cfg.Path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestReload: SIGHUP re-reads the profile. New gateways and delays apply
// in place and keep the session; a removed gateway in use, or a new
// certificate, reconnects at once; keys of what `up` built (device,
// CPUs, socket) keep their running values and are named in the log; a
// broken file changes nothing.
func TestReload(t *testing.T) {
	noLeaks(t)
	path := filepath.Join(t.TempDir(), "acme.toml")
	e := startClient(t, envOpt{edit: func(c *Config) { c.Path = path }})
	cert, key := e.c.cfg.TLS.CertPEM, e.c.cfg.TLS.KeyPEM
	a := e.gw.ln.Addr().String()
	other := newFakeGateway(t, gatewayTLS(t, e.ca, e.ca, func(c *x509.Certificate) { c.DNSNames = append(c.DNSNames, "gw2.test") }))
	b := other.ln.Addr().String()
	s, _ := e.up(testConfig())
	<-e.ready

	// Unchanged: nothing to do.
	profileTOML(t, e, []string{a}, cert, key, "")
	if err := e.c.Reload("SIGHUP"); err != nil {
		t.Fatal(err)
	}
	e.waitLog(`msg="configuration reloaded" device=alice-laptop trigger=SIGHUP applied="nothing changed"`)

	// A second gateway and slower reconnects: in place, the session stays.
	profileTOML(t, e, []string{a, b}, cert, key, "[reconnect]\nmin_delay = \"2ms\"\nmax_delay = \"30ms\"\nrefused_delay = \"1h\"\n")
	if err := e.c.Reload("SIGHUP"); err != nil {
		t.Fatal(err)
	}
	e.waitLog(`applied=servers,reconnect.min_delay,reconnect.max_delay`)
	if got := e.c.servers(); len(got) != 2 || got[1] != b || e.c.reconnect().MaxDelay != 30*time.Millisecond {
		t.Fatalf("after reload: servers %v, reconnect %+v", got, e.c.reconnect())
	}
	if st := e.c.Status(); !st.Connected || st.Server != a {
		t.Fatalf("the session did not survive a reload that keeps its gateway: %+v", st)
	}

	// What `up` built stays as it is, and the log says what needs a restart.
	profileTOML(t, e, []string{a, b}, cert, key, "[metrics]\nlisten = \"127.0.0.1:0\"\n", runtime.NumCPU()+1)
	if err := e.c.Reload("SIGHUP"); err != nil {
		t.Fatal(err)
	}
	e.waitLog(`keys=tunnel.cpus,metrics.listen`)
	mustContain(t, e.logs.String(), "systemctl restart sallyport-client@acme")
	if e.c.cfg.Metrics.Listen != "" || e.c.cfg.Tunnel.CPUs != runtime.NumCPU() {
		t.Fatal("a restart-only key changed in the running client")
	}

	// A broken file changes nothing.
	if err := os.WriteFile(e.c.cfg.Path, []byte("servers = [\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Reload("SIGHUP"); err == nil || !strings.Contains(err.Error(), "acme.toml:") {
		t.Fatalf("broken file: %v", err)
	}
	e.waitLog(`msg="reload failed; the running configuration stays"`)
	if len(e.c.servers()) != 2 {
		t.Fatal("a broken file changed the gateways")
	}

	// The gateway in use is removed: the session ends (the gateway is told
	// why) and the client moves to the one left, at once.
	profileTOML(t, e, []string{b}, cert, key, "")
	if err := e.c.Reload("SIGHUP"); err != nil {
		t.Fatal(err)
	}
	if typ, p := s.next(t); typ != tunnel.FrameClose || !strings.Contains(string(p), `"`+string(tunnel.ReasonClientReload)+`"`) {
		t.Fatalf("the gateway in use got frame %#x %q, want a close saying why", typ, p)
	}
	s2 := other.accept(t)
	s2.hello(t)
	if err := s2.w.WriteConfig(testConfig()); err != nil {
		t.Fatal(err)
	}
	e.status("connected to the second gateway", func(st Status) bool { return st.Connected && st.Server == b })
	e.waitLog("the gateway in use (" + a + ") is no longer in servers")

	// A new device certificate: reconnect with it.
	_, cert2, key2 := e.ca.leaf(t, "alice-laptop", deviceLeaf)
	profileTOML(t, e, []string{b}, string(cert2), string(key2), "")
	if err := e.c.Reload("SIGHUP"); err != nil {
		t.Fatal(err)
	}
	s3 := other.accept(t)
	s3.hello(t)
	if block, _ := pem.Decode(cert2); !bytes.Equal(s3.tls.ConnectionState().PeerCertificates[0].Raw, block.Bytes) {
		t.Fatal("the reconnect after a new certificate did not present it")
	}
	e.waitLog("the CA, certificate, pin or server_name changed")
	e.waitLog(`applied=tls.cert_pem,tls.key_pem` + "\n")

	// Another gateway name alone: that is what the log says changed, and
	// the session is renewed under it.
	if err := s3.w.WriteConfig(testConfig()); err != nil {
		t.Fatal(err)
	}
	e.status("connected with the new certificate", func(st Status) bool { return st.Connected })
	profileTOML(t, e, []string{b}, string(cert2), string(key2), "")
	renamed, err := os.ReadFile(e.c.cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.c.cfg.Path, bytes.Replace(renamed, []byte(`server_name = "gw.test"`), []byte(`server_name = "gw2.test"`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Reload("SIGHUP"); err != nil {
		t.Fatal(err)
	}
	e.waitLog(`applied=server_name` + "\n")
	other.accept(t).hello(t)

	// A reconnect a reload asked for is not a lost connection: no
	// "disconnected" warning naming the connection's end as the cause.
	if logs := e.logs.String(); strings.Contains(logs, "disconnected from gateway") {
		t.Errorf("a reload's reconnect was logged as a disconnection:\n%s", logs)
	}
}

// TestReloadWhileRefused: a device refused for something only the admin
// can fix waits refused_delay (an hour here) before it tries again; a
// reload that brings a new certificate is tried at once, not an hour later.
func TestReloadWhileRefused(t *testing.T) {
	noLeaks(t)
	path := filepath.Join(t.TempDir(), "acme.toml")
	e := startClient(t, envOpt{edit: func(c *Config) { c.Path = path }})
	a := e.gw.ln.Addr().String()
	s := e.gw.accept(t)
	s.hello(t)
	s.refuse(t, "revoked")
	e.checkRefused("revoked", true)

	_, cert2, key2 := e.ca.leaf(t, "alice-laptop", deviceLeaf)
	profileTOML(t, e, []string{a}, string(cert2), string(key2), "")
	if err := e.c.Reload("SIGHUP"); err != nil {
		t.Fatal(err)
	}
	s2 := e.gw.accept(t)
	s2.hello(t)
	if block, _ := pem.Decode(cert2); !bytes.Equal(s2.tls.ConnectionState().PeerCertificates[0].Raw, block.Bytes) {
		t.Fatal("the try after the reload did not present the new certificate")
	}
	e.waitLog("trying the gateway now with the reloaded profile")
}

// TestStatusWhileTrying: before and between sessions, status names the
// gateway the client is trying (not nothing).
func TestStatusWhileTrying(t *testing.T) {
	noLeaks(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close() // nothing listens there: every attempt fails
	e := startClient(t, envOpt{edit: func(c *Config) { c.Server = down }})
	e.status("the gateway it tries", func(st Status) bool { return !st.Connected && st.Trying == down && st.Server == "" })
}
