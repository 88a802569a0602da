package e2e

// Certificates that renew themselves (docs/renewal.md), end to end: real
// gateway and laptop binaries in namespaces, certificates that live one or
// two minutes. Every test here is parallel; the longest (TestRenewal) waits
// for a two-minute certificate to expire.

import (
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki"
)

// renewalPKI is a PKI with a gateway certificate and an online issuer.
func renewalPKI(t *testing.T, initArgs ...string) *PKI {
	t.Helper()
	k := &PKI{t: t, Dir: filepath.Join(t.TempDir(), "pki")}
	k.pki("init", append([]string{"--name", "Test CA"}, initArgs...)...)
	k.ServerCert(gwName, "--ip", gwAddr)
	k.pki("issuer")
	return k
}

// issueFor issues device (group eng) valid from now for life.
func (k *PKI) issueFor(device string, life time.Duration) *x509.Certificate {
	k.t.Helper()
	now := time.Now().UTC().Truncate(time.Second)
	k.Issue(device, []string{"eng"}, "--not-before", now.Format(time.RFC3339), "--not-after", now.Add(life).Format(time.RFC3339))
	crt, _ := k.Device(device)
	certs, err := pki.LoadCertificates(crt)
	if err != nil {
		k.t.Fatal(err)
	}
	return certs[0]
}

// renewalTable is the gateway's [renewal] (placed before [tls]).
func renewalTable(dir, lifetime, renewAt string) string {
	s := fmt.Sprintf("[renewal]\nissuer_cert = %q\nissuer_key = %q\nlifetime = %q\nrecord = %q\n",
		filepath.Join(dir, "renewal-issuer.crt"), filepath.Join(dir, "renewal-issuer.key"), lifetime, filepath.Join(dir, "renewals.jsonl"))
	if renewAt != "" {
		s += "renew_at = " + renewAt + "\n"
	}
	return s
}

// startBundleLaptop runs `sallyport up` on the profile `pki bundle` writes
// (certificate and key inline: the form that renews), with the test's TUN
// device, admin socket and quick reconnects added.
func (tp *Topo) startBundleLaptop(ns string, k *PKI, device, sockDir string) *Laptop {
	tp.t.Helper()
	path := filepath.Join(tp.t.TempDir(), device+".toml")
	k.pki("bundle", "--device", device, "--server", listen, "--server-name", gwName, "-o", path)
	sock := filepath.Join(sockDir, "lap-"+device+".sock")
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		tp.t.Fatal(err)
	}
	// The bundle ends with its [tunnel] table: the device goes there.
	fmt.Fprintf(f, "device = \"sp0\"\n\n[admin]\nsocket = %q\n\n[reconnect]\nmin_delay = \"200ms\"\nmax_delay = \"2s\"\n", sock)
	f.Close()
	l := &Laptop{tp: tp, NS: ns, Conf: path, Socket: sock, Dev: "sp0"}
	l.Proc = tp.start(ns, "client-"+device, nil, binPath, "up", "-c", path)
	return l
}

// renewedLines returns the gateway's "certificate renewed" lines for device.
func renewedLines(gw *Gateway, device string) []string {
	var out []string
	for _, l := range regexp.MustCompile(`.*msg="certificate renewed".*`).FindAllString(gw.Proc.Err(), -1) {
		if hasKV(l, "device", device) {
			out = append(out, l)
		}
	}
	return out
}

// profileCerts parses the PEM blocks of key (cert_pem or ca_pem) of a
// profile.
func profileCerts(t *testing.T, path, key string) []*x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)` + key + ` = """\n(.*?)"""`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s in %s", key, path)
	}
	certs, err := pki.ParseCertificatesPEM(m[1])
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

// TestRenewal: a two-minute certificate renews near two thirds of its
// life, inside the session; the session outlives the first certificate;
// the new serial is in use (gateway, laptop, profile); the first
// certificate is refused once it has expired.
func TestRenewal(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := renewalPKI(t)
	enroll := k.issueFor("alice", 2*time.Minute)
	sock := shortTempDir(t)
	sc := defaultServerConf(k, "wireguard", sock)
	sc.Extra = renewalTable(k.Dir, "2m", "")
	gw := tp.startGateway(sc)
	lap := tp.startBundleLaptop(tp.Lap, k, "alice", sock)
	lap.waitUp(20 * time.Second)
	first, ok := gw.Session("alice")
	if !ok || first.Serial != pki.FormatSerial(enroll.SerialNumber) {
		t.Fatalf("session %+v, want the enrollment serial", first)
	}
	if !waitFor(time.Until(enroll.NotAfter), func() bool { return len(renewedLines(gw, "alice")) > 0 }) {
		t.Fatalf("no renewal before the certificate expired:\n%s", tail(gw.Proc.Err(), 20))
	}
	at := time.Since(enroll.NotBefore)
	t.Logf("renewed %v into a %v certificate (%.2f of its life)", at.Round(time.Second), 2*time.Minute, at.Seconds()/120)
	if at < 72*time.Second { // 2/3 less the 5% jitter is 74 s: never early
		t.Errorf("renewed after %v, before two thirds of the lifetime", at)
	}
	line := renewedLines(gw, "alice")[0]
	if !hasKV(line, "old_serial", pki.FormatSerial(enroll.SerialNumber)) || !hasKV(line, "lineage", pki.FormatSerial(enroll.SerialNumber)) {
		t.Errorf("renewal log line %q", line)
	}
	// The session outlives its first certificate.
	time.Sleep(time.Until(enroll.NotAfter) + 3*time.Second)
	st, ok := gw.Session("alice")
	if !ok || st.Since != first.Since {
		t.Fatalf("after the first certificate expired: session %+v (%v), want the one since %s", st, ok, first.Since)
	}
	if st.Serial == first.Serial || st.Lineage != first.Serial || st.Renewals < 1 {
		t.Fatalf("session after renewal %+v: want a new serial with the enrollment's lineage", st)
	}
	if got := tp.ping(tp.Lap, lanHost, 2); got != 2 {
		t.Fatalf("ping through the renewed session: %d/2", got)
	}
	cs, err := lap.Status()
	if err != nil || cs.CertSerial != st.Serial || !cs.Connected {
		t.Fatalf("laptop status %+v (%v), want serial %s", cs, err, st.Serial)
	}
	if pc := profileCerts(t, lap.Conf, "cert_pem"); pki.FormatSerial(pc[0].SerialNumber) == first.Serial {
		t.Fatal("the profile still holds the enrollment certificate")
	}
	// The first certificate is refused now.
	crt, key := k.Device("alice")
	hold := filepath.Join(t.TempDir(), "go")
	if err := os.WriteFile(hold, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ := tp.helperRun(20*time.Second, tp.Lap, "tlsdial", listen, gwName, k.CA(), crt, key, hold)
	if field(out, "close_reason") != "expired" && !strings.Contains(out, "result=refused") {
		t.Fatalf("the expired first certificate: %s", out)
	}
}

// TestRenewalLineageRevoked: revoking the enrollment serial cuts a device
// renewed three times, within a second of the CRL changing.
func TestRenewalLineageRevoked(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := renewalPKI(t)
	enroll := k.issueFor("alice", time.Minute)
	sock := shortTempDir(t)
	sc := defaultServerConf(k, "wireguard", sock)
	sc.Extra = renewalTable(k.Dir, "1m", "0.1") // a renewal every ~6 s
	gw := tp.startGateway(sc)
	lap := tp.startBundleLaptop(tp.Lap, k, "alice", sock)
	lap.waitUp(20 * time.Second)
	var st Session
	if !waitFor(45*time.Second, func() bool { st, _ = gw.Session("alice"); return st.Renewals >= 3 }) {
		t.Fatalf("renewals in the session: %+v\n%s", st, tail(gw.Proc.Err(), 20))
	}
	if st.Lineage != pki.FormatSerial(enroll.SerialNumber) || st.Serial == st.Lineage {
		t.Fatalf("session after three renewals %+v", st)
	}
	start := time.Now()
	k.Revoke("alice")
	if !waitFor(5*time.Second, func() bool { _, ok := gw.Session("alice"); return !ok }) {
		t.Fatalf("the device renewed three times survived the revocation of its enrollment:\n%s", tail(gw.Proc.Err(), 20))
	}
	t.Logf("cut %v after the CRL was written", time.Since(start).Round(time.Millisecond))
	closed := regexp.MustCompile(`.*msg="session closed".*`)
	if !waitFor(2*time.Second, func() bool {
		for _, l := range closed.FindAllString(gw.Proc.Err(), -1) {
			if hasKV(l, "device", "alice") && hasKV(l, "reason", "revoked") && strings.Contains(l, "its lineage") {
				return true
			}
		}
		return false
	}) {
		t.Errorf("no session closed device=alice reason=revoked naming the lineage:\n%s", tail(gw.Proc.Err(), 10))
	}
	var msg string
	if !waitFor(10*time.Second, func() bool { msg = laptopMessage(t, lap); return msg != "" }) || !strings.Contains(msg, "revoked") {
		t.Errorf("laptop message %q", msg)
	}
}

// TestRenewalReplayRefused: a renewal request recorded on one session is
// refused on another; the same device's own request there is granted.
func TestRenewalReplayRefused(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := renewalPKI(t)
	k.Issue("alice", []string{"eng"})
	sock := shortTempDir(t)
	sc := defaultServerConf(k, "wireguard", sock)
	sc.Extra = renewalTable(k.Dir, "1h", "")
	tp.startGateway(sc)
	crt, key := k.Device("alice")
	out, _ := tp.helperRun(30*time.Second, tp.Lap, "renew", "replay", listen, gwName, k.CA(), crt, key)
	if field(out, "renew_offered") != "true" || field(out, "replayed") != "renew-invalid" || field(out, "own") != "issued" {
		t.Fatalf("replay: %s", out)
	}
}

// TestRenewalExpiredNever: a certificate that has expired gets nothing,
// even on a session that was open before it expired.
func TestRenewalExpiredNever(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := renewalPKI(t)
	k.issueFor("alice", 6*time.Second)
	sock := shortTempDir(t)
	sc := defaultServerConf(k, "wireguard", sock)
	sc.Extra = renewalTable(k.Dir, "1h", "")
	gw := tp.startGateway(sc)
	crt, key := k.Device("alice")
	out, _ := tp.helperRun(30*time.Second, tp.Lap, "renew", "expired", listen, gwName, k.CA(), crt, key)
	if strings.Contains(out, "result=issued") || field(out, "error") != "" || out == "" {
		t.Fatalf("renewal after expiry: %s", out)
	}
	t.Logf("after expiry: %s", strings.TrimSpace(out))
	if n := len(renewedLines(gw, "alice")); n != 0 {
		t.Fatalf("the gateway renewed an expired certificate %d times", n)
	}
	// And a new connection with it is refused as expired.
	out, _ = tp.helperRun(20*time.Second, tp.Lap, "tlsdial", listen, gwName, k.CA(), crt, key)
	if !strings.Contains(out, "result=refused") {
		t.Fatalf("an expired certificate connected: %s", out)
	}
}

// TestCARotation: pki rotate; the gateways trust both CAs and renew from
// the next one; the laptop renews under the next CA and takes the new
// bundle (vouched for by the cross-certificate); the gateway moves to a
// certificate of the next CA and the laptop still connects; pki rotate
// --finish removes the old CA, and nobody is cut. Both with a root that
// issues and with an issuing intermediate (pki init --intermediate, which
// the docs recommend: the laptop took no rotation bundle of such a PKI,
// and was cut when the gateway moved to the next CA).
func TestCARotation(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	for _, tc := range []struct {
		name     string
		initArgs []string
	}{{"root", nil}, {"intermediate", []string{"--intermediate"}}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			caRotation(t, tc.initArgs...)
		})
	}
}

func caRotation(t *testing.T, initArgs ...string) {
	tp := newTopo(t, false)
	k := renewalPKI(t, initArgs...)
	k.issueFor("alice", time.Minute)
	// The gateway's own copies of what the PKI makes, replaced like an
	// admin copying files to a gateway.
	gwDir := t.TempDir()
	install := func(files ...string) {
		for _, f := range files {
			b, err := os.ReadFile(filepath.Join(k.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			mode := os.FileMode(0o644)
			if strings.HasSuffix(f, ".key") {
				mode = 0o600
			}
			to := filepath.Join(gwDir, filepath.Base(f))
			if err := os.WriteFile(to+".tmp", b, mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(to+".tmp", to); err != nil {
				t.Fatal(err)
			}
		}
	}
	install("ca.crt", "crl.pem", "renewal-issuer.key", "renewal-issuer.crt", "servers/"+gwName+".key", "servers/"+gwName+".crt")
	sock := shortTempDir(t)
	sc := defaultServerConf(k, "wireguard", sock)
	sc.ClientCA, sc.CRL = filepath.Join(gwDir, "ca.crt"), filepath.Join(gwDir, "crl.pem")
	sc.Cert, sc.Key = filepath.Join(gwDir, gwName+".crt"), filepath.Join(gwDir, gwName+".key")
	sc.Extra = renewalTable(gwDir, "1m", "0.5") // a renewal every ~30 s
	gw := tp.startGateway(sc)
	lap := tp.startBundleLaptop(tp.Lap, k, "alice", sock)
	lap.waitUp(20 * time.Second)

	reloads := func() int { return strings.Count(gw.Proc.Err(), `msg="configuration reloaded"`) }
	// Day 0: the next CA; the gateway gets ca.crt first, then the CRL and
	// the new online issuer.
	k.pki("rotate", "--device-lifetime", "1m")
	before := reloads()
	install("ca.crt")
	install("crl.pem", "renewal-issuer.key", "renewal-issuer.crt")
	if !waitFor(10*time.Second, func() bool {
		return reloads() > before && strings.Contains(gw.Proc.Err(), "G2 Online Issuer") || statusIssuerG2(gw)
	}) {
		t.Fatalf("the gateway did not take the rotation:\n%s", tail(gw.Proc.Err(), 20))
	}
	// The laptop renews under the next CA and takes the bundle.
	var st Session
	if !waitFor(80*time.Second, func() bool { st, _ = gw.Session("alice"); return strings.Contains(st.CA, "Test CA G2") }) {
		t.Fatalf("alice never renewed under the next CA: %+v\n%s", st, tail(gw.Proc.Err(), 20))
	}
	bundle, err := pki.LoadCertificates(filepath.Join(k.Dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	sameCerts := func(a, b []*x509.Certificate) bool { return slices.EqualFunc(a, b, (*x509.Certificate).Equal) }
	waitFor(5*time.Second, func() bool { return sameCerts(profileCerts(t, lap.Conf, "ca_pem"), bundle) })
	if got := profileCerts(t, lap.Conf, "ca_pem"); !sameCerts(got, bundle) {
		t.Fatalf("the laptop's ca_pem holds %d certificates, not the rotation's ca.crt (%d: both CAs and the cross-certificate)\n%s", len(got), len(bundle), tail(lap.Proc.Err(), 10))
	}
	// The gateway's next certificate, from the next CA: the laptop
	// connects to it.
	gwCert, err := pki.LoadCertificates(filepath.Join(k.Dir, "servers", gwName+".crt"))
	if err != nil {
		t.Fatal(err)
	}
	k.pki("revoke", pki.FormatSerial(gwCert[0].SerialNumber), "--reason", "superseded")
	k.ServerCert(gwName, "--ip", gwAddr)
	before = reloads()
	install("servers/"+gwName+".key", "servers/"+gwName+".crt", "crl.pem")
	if !waitFor(10*time.Second, func() bool { return reloads() > before }) {
		t.Fatalf("the gateway did not take its next certificate:\n%s", tail(gw.Proc.Err(), 20))
	}
	time.Sleep(500 * time.Millisecond) // the three files may come in more than one reload
	if _, err := tp.sp(tp.GW, "server", "kick", "--socket", gw.Socket, "alice"); err != nil {
		t.Fatal(err)
	}
	lap.waitUp(30 * time.Second)
	// The end: the old CA leaves. Nobody is cut.
	st, _ = gw.Session("alice")
	k.pki("rotate", "--finish")
	before = reloads()
	install("ca.crt", "crl.pem")
	if !waitFor(10*time.Second, func() bool { return reloads() > before }) {
		t.Fatalf("the gateway did not reload the end of the rotation:\n%s", tail(gw.Proc.Err(), 20))
	}
	time.Sleep(time.Second)
	after, ok := gw.Session("alice")
	if !ok || after.Since != st.Since {
		t.Fatalf("the end of the rotation cut alice: %+v (%v), was since %s\n%s", after, ok, st.Since, tail(gw.Proc.Err(), 20))
	}
	if full, _ := gw.Status(); len(full.CAs) != 1 {
		t.Errorf("devices per CA after the rotation: %v", full.CAs)
	}
	if got := tp.ping(tp.Lap, lanHost, 2); got != 2 {
		t.Fatalf("ping after the rotation: %d/2", got)
	}
}

// statusIssuerG2 reports whether the gateway's status names the next
// online issuer.
func statusIssuerG2(gw *Gateway) bool {
	out, err := gw.tp.sp(gw.tp.GW, "server", "status", "--socket", gw.Socket)
	return err == nil && strings.Contains(out, "G2 Online Issuer")
}
