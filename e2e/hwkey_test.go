package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testenv"
	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/hwkey/hwtest"
)

// TestHardwareKeyTunnel enrolls a laptop whose device key lives in a TPM
// (swtpm) or a PKCS#11 token (SoftHSM2) the way an admin would (pki csr on
// the laptop, pki sign and pki bundle on the CA), brings the tunnel up,
// moves data through it, checks that no usable private key is on the
// laptop's disk (profile, key directory, state directory), and does it all
// again after a reboot (the TPM restarted from its saved state, the
// client restarted). The gateway's policy for the group demands hardware
// keys: a laptop of the group with a key file is refused first, with the
// reason, and the hardware-keyed one (the admin vouched for its key origin
// at signing) gets in.
func TestHardwareKeyTunnel(t *testing.T) {
	requireRoot(t)
	for _, kind := range []string{"tpm", "pkcs11"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			tp := newTopo(t, false)
			k := stdPKI(t)
			sock := shortTempDir(t)
			laptop := filepath.Join(t.TempDir(), "laptop")
			state := t.TempDir()
			env := []string{"STATE_DIRECTORY=" + state}
			csrArgs := []string{"pki", "csr", "--dir", laptop, "--device", "carol"}
			var reboot func()
			var keyRef []string
			switch kind {
			case "tpm":
				tpm := hwtest.StartSWTPM(t, shortTempDir(t))
				csrArgs = append(csrArgs, "--tpm", "--tpm-device", tpm.Socket)
				keyRef = []string{"--key-tpm", filepath.Join(laptop, "devices", "carol.tpmkey"), "--tpm-device", tpm.Socket}
				reboot = tpm.Reboot
			case "pkcs11":
				dir := t.TempDir()
				h := hwtest.NewSoftHSM(t, dir, "carol-card", "2468")
				env = append(env, h.Env())
				uri := h.URI("sallyport", hwtest.WritePIN(t, filepath.Join(dir, "pin"), h.PIN))
				csrArgs = append(csrArgs, "--pkcs11", uri)
				keyRef = []string{"--key-pkcs11", uri}
				reboot = func() {} // the token keeps its objects in files; the client restarts
			}
			cmd := exec.Command(binPath, csrArgs...)
			cmd.Env = append(os.Environ(), env...)
			out, err := cmd.CombinedOutput()
			if kind == "pkcs11" && strings.Contains(string(out), "built without PKCS#11 support") {
				testenv.Require(t, "a sallyport binary built with -tags pkcs11 (make build)", false)
			}
			if err != nil {
				t.Fatalf("pki csr: %v\n%s", err, out)
			}
			k.pki("sign", "--csr", filepath.Join(laptop, "devices", "carol.csr"), "--device", "carol", "--group", "hw", "--key-origin", kind)
			k.Issue("dave", []string{"hw"}) // a key file, in the same group
			prof := filepath.Join(laptop, "carol.toml")
			k.pki("bundle", append([]string{"--device", "carol", "--server", listen, "--server-name", gwName, "-o", prof}, keyRef...)...)
			// The bundle ends in [tunnel]: pin the device, keep the socket
			// and the reconnects the tests use.
			f, err := os.OpenFile(prof, os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = f.WriteString("device = \"sp0\"\n[admin]\nsocket = \"" + filepath.Join(sock, "lap.sock") + "\"\n[reconnect]\nmin_delay = \"200ms\"\nmax_delay = \"2s\"\n")
			f.Close()

			tp.startGateway(defaultServerConf(k, "wireguard", sock,
				Policy{Name: "hardware-only", Match: map[string][]string{"ou": {"hw"}}, Allow: []string{lanNet}, RequireHardwareKey: true}))
			dave := tp.startLaptop(tp.Lap, "dave", clientConf(k, "dave", "wireguard", sock))
			var refused string
			waitFor(20*time.Second, func() bool {
				raw, err := exec.Command("ip", "netns", "exec", tp.Lap, binPath, "status", "--socket", dave.Socket, "--json").Output()
				var st struct {
					Refused string `json:"refused"`
				}
				if err == nil && json.Unmarshal(raw, &st) == nil {
					refused = st.Refused
				}
				return refused != ""
			})
			if refused != "hardware-key-required" {
				t.Fatalf("a key-file laptop in the hardware-only group: refused %q, want hardware-key-required\n%s", refused, tail(dave.Proc.Log(), 20))
			}
			if !dave.Proc.Stop(10 * time.Second) {
				t.Fatal("dave's client did not stop")
			}
			sink := tp.helper(tp.LAN, "tcpsink", lanHost+":5201")
			waitReady(t, sink)
			for boot := 1; boot <= 2; boot++ {
				lap := &Laptop{tp: tp, NS: tp.Lap, Conf: prof, Socket: filepath.Join(sock, "lap.sock"), Dev: "sp0"}
				lap.Proc = tp.start(tp.Lap, "client-carol", env, binPath, "up", "-c", prof)
				lap.waitUp(20 * time.Second)
				if got := tp.ping(tp.Lap, lanHost, 2); got != 2 {
					t.Fatalf("boot %d: ping through the tunnel %d/2", boot, got)
				}
				tp.transfer(tp.Lap, lanHost+":5201", 256<<10)
				raw, err := exec.Command("ip", "netns", "exec", tp.Lap, binPath, "status", "--socket", lap.Socket, "--json").Output()
				if err != nil {
					t.Fatal(err)
				}
				var st struct {
					KeyKind     string `json:"key_kind"`
					KeyLocation string `json:"key_location"`
				}
				if err := json.Unmarshal(raw, &st); err != nil || st.KeyKind != kind {
					t.Errorf("boot %d: status key %q (%s), want %q", boot, st.KeyKind, st.KeyLocation, kind)
				}
				if !lap.Proc.Stop(10 * time.Second) {
					t.Fatal("client did not stop")
				}
				for _, dir := range []string{laptop, state} {
					noUsableKey(t, dir)
				}
				reboot()
			}
		})
	}
}

// noUsableKey fails when a file under dir holds a PEM private key, also
// one quoted inside another format (a JSON state file, a TOML string),
// where PEM parsing does not find it. A TPM key file ("TSS2 PRIVATE KEY",
// wrapped by the TPM) is not one.
func noUsableKey(t *testing.T, dir string) {
	t.Helper()
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		if _, err := pki.ParseKey(data); err == nil {
			t.Errorf("%s holds a usable private key", path)
			return nil
		}
		text := strings.ReplaceAll(string(data), "TSS2 PRIVATE KEY", "")
		if strings.Contains(text, "PRIVATE KEY-----") {
			t.Errorf("%s holds a private key block", path)
		}
		return nil
	})
}
