package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/client"
	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/hwkey/hwtest"
)

// TestHardwareKeyRenewal: a laptop enrolled with an attested TPM key (pki
// csr --tpm on a TPM with an EK certificate; pki sign --require-hardware,
// the challenge opened with pki csr --activate) connects to a gateway
// whose policy requires hardware keys and which renews inside the session.
// Its certificate is due, so it renews at once: with a new key made in the
// same TPM, certified by the enrollment's attestation key; the renewed
// certificate keeps the attested origin (else the gateway would refuse
// it), the profile names the new TPM key file and holds no key, and
// traffic flows.
func TestHardwareKeyRenewal(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	k.pki("issuer")
	sock := shortTempDir(t)
	laptop := filepath.Join(t.TempDir(), "laptop")
	state := t.TempDir()
	tpm, ekCA := hwtest.StartSWTPMWithEK(t, shortTempDir(t))
	lap := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(binPath, append([]string{"pki", "csr", "--dir", laptop, "--device", "carol", "--tpm-device", tpm.Socket}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("pki csr %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if out := lap("--tpm"); !strings.Contains(out, "attestation: ") || strings.Contains(out, "attestation: none") {
		t.Fatalf("pki csr --tpm wrote no attestation:\n%s", out)
	}
	dev := filepath.Join(laptop, "devices")
	now := time.Now().UTC()
	sign := []string{"--csr", filepath.Join(dev, "carol.csr"), "--device", "carol", "--group", "hw",
		"--require-hardware", "--attestation", filepath.Join(dev, "carol.attest"), "--ek-ca", ekCA,
		"--not-before", now.Add(-4 * time.Minute).Format(time.RFC3339), "--not-after", now.Add(time.Minute).Format(time.RFC3339)}
	k.pki("sign", sign...)
	lap("--activate", k.path("devices", "carol.challenge"))
	k.pki("sign", append(sign, "--activation", filepath.Join(dev, "carol.response"))...)
	prof := filepath.Join(laptop, "carol.toml")
	keyFile := filepath.Join(dev, "carol.tpmkey")
	k.pki("bundle", "--device", "carol", "--server", listen, "--server-name", gwName, "--key-tpm", keyFile, "--tpm-device", tpm.Socket, "-o", prof)
	f, err := os.OpenFile(prof, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("device = \"sp0\"\n[admin]\nsocket = \"" + filepath.Join(sock, "lap.sock") + "\"\n[reconnect]\nmin_delay = \"200ms\"\nmax_delay = \"2s\"\n")
	f.Close()

	sc := defaultServerConf(k, "wireguard", sock, Policy{Name: "hardware-only", Match: map[string][]string{"ou": {"hw"}}, Allow: []string{lanNet}, RequireHardwareKey: true})
	// [renewal] rides in after [tunnel]'s keys (the template has no slot
	// for another table; [admin] follows it).
	sc.TunnelExtra = "\n[renewal]\nissuer_cert = " + q(k.path("renewal-issuer.crt")) + "\nissuer_key = " + q(k.path("renewal-issuer.key")) +
		"\nlifetime = \"10m\"\nrecord = " + q(filepath.Join(t.TempDir(), "renewals.jsonl")) + "\n"
	tp.startGateway(sc)
	l := &Laptop{tp: tp, NS: tp.Lap, Conf: prof, Socket: filepath.Join(sock, "lap.sock"), Dev: "sp0"}
	l.Proc = tp.start(tp.Lap, "client-carol", []string{"STATE_DIRECTORY=" + state}, binPath, "up", "-c", prof)
	l.waitUp(20 * time.Second)
	var st struct {
		Renewals   int    `json:"renewals"`
		RenewError string `json:"renew_error"`
	}
	if !waitFor(30*time.Second, func() bool {
		raw, err := exec.Command("ip", "netns", "exec", tp.Lap, binPath, "status", "--socket", l.Socket, "--json").Output()
		return err == nil && json.Unmarshal(raw, &st) == nil && st.Renewals >= 1
	}) {
		t.Fatalf("no renewal within 30s (last error %q)\n%s", st.RenewError, tail(l.Proc.Log(), 30))
	}
	cfg, err := client.LoadConfig(prof)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS.KeyTPM == keyFile || !strings.HasPrefix(filepath.Base(cfg.TLS.KeyTPM), "carol-r") {
		t.Fatalf("profile key_tpm after renewal %q, want a new TPM key file", cfg.TLS.KeyTPM)
	}
	certs, err := pki.ParseCertificatesPEM([]byte(cfg.TLS.CertPEM))
	if err != nil {
		t.Fatal(err)
	}
	if !pki.KeyOriginAttested(certs[0]) || pki.IdentityOf(certs[0]).Lineage == pki.IdentityOf(certs[0]).Serial {
		t.Fatalf("renewed certificate: attested %v, lineage %q", pki.KeyOriginAttested(certs[0]), pki.IdentityOf(certs[0]).Lineage)
	}
	if got := tp.ping(tp.Lap, lanHost, 2); got != 2 {
		t.Fatalf("ping after renewal: %d/2", got)
	}
	noUsableKey(t, laptop)
	noUsableKey(t, state)
}

func q(s string) string { b, _ := json.Marshal(s); return string(b) }
