// Package hwtest gives tests hardware keys without hardware: a software
// TPM (swtpm, serving its unix socket; restartable with its state, which
// is a reboot of the laptop's TPM) and a PKCS#11 token (SoftHSM2, in a
// token directory of the test's own). Missing tools skip the test, or fail
// it under CI=true (internal/testenv); .ci/run installs them.
package hwtest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testenv"
)

// SWTPM is a running software TPM whose state lives in Dir.
type SWTPM struct {
	t      testing.TB
	Dir    string // state directory (the TPM's NVRAM: seeds, persistent objects)
	Socket string // the TPM command socket: use it as the TPM device
	bin    string
	cmd    *exec.Cmd
	done   chan struct{}
}

// StartSWTPM starts a software TPM 2.0 keeping its state in dir (made if
// missing) and stops it when the test ends.
func StartSWTPM(t testing.TB, dir string) *SWTPM {
	t.Helper()
	s := &SWTPM{t: t, Dir: dir, Socket: filepath.Join(dir, "tpm.sock"), bin: testenv.Command(t, "swtpm")}
	if err := os.MkdirAll(filepath.Join(dir, "state"), 0o700); err != nil {
		t.Fatal(err)
	}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func (s *SWTPM) start() {
	s.t.Helper()
	os.Remove(s.Socket)
	s.cmd = exec.Command(s.bin, "socket", "--tpm2",
		"--tpmstate", "dir="+filepath.Join(s.Dir, "state"),
		"--server", "type=unixio,path="+s.Socket,
		"--ctrl", "type=unixio,path="+filepath.Join(s.Dir, "ctrl.sock"),
		"--flags", "startup-clear",
		"--log", "file="+filepath.Join(s.Dir, "swtpm.log"))
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start swtpm: %v", err)
	}
	s.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(s.cmd, s.done)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", s.Socket); err == nil {
			c.Close()
			return
		}
		select {
		case <-s.done:
			log, _ := os.ReadFile(filepath.Join(s.Dir, "swtpm.log"))
			s.t.Fatalf("swtpm exited at start: %s", log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatal("swtpm did not open its socket within 10s")
		}
	}
}

// Stop ends the software TPM (its state stays in Dir). Idempotent.
func (s *SWTPM) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
	os.Remove(s.Socket)
}

// Reboot stops the TPM and starts it again from its saved state, as a
// laptop's TPM is after a reboot: seeds and persistent objects survive,
// everything loaded is gone.
func (s *SWTPM) Reboot() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// SoftHSM is a SoftHSM2 token in a directory of the test's own.
type SoftHSM struct {
	Conf   string // the softhsm2.conf: set SOFTHSM2_CONF to it
	Module string // the PKCS#11 library
	Label  string // token label
	PIN    string // user PIN
	SOPIN  string // security officer PIN
}

// Env is the environment entry that points SoftHSM at this token's
// configuration (for a child process).
func (h *SoftHSM) Env() string { return "SOFTHSM2_CONF=" + h.Conf }

// ModulePaths are where Debian installs the SoftHSM2 PKCS#11 library.
var ModulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
}

// NewSoftHSM makes a fresh token labelled label with user PIN pin, its
// objects kept under dir. The caller points the PKCS#11 module at it with
// SOFTHSM2_CONF (t.Setenv("SOFTHSM2_CONF", h.Conf), or Env for a child).
func NewSoftHSM(t testing.TB, dir, label, pin string) *SoftHSM {
	t.Helper()
	util := testenv.Command(t, "softhsm2-util")
	h := &SoftHSM{Conf: filepath.Join(dir, "softhsm2.conf"), Label: label, PIN: pin, SOPIN: "so-" + pin}
	for _, p := range ModulePaths {
		if _, err := os.Stat(p); err == nil {
			h.Module = p
			break
		}
	}
	testenv.Require(t, "the SoftHSM2 PKCS#11 library (Debian package softhsm2)", h.Module != "")
	tokens := filepath.Join(dir, "tokens")
	if err := os.MkdirAll(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(h.Conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(util, "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", h.SOPIN)
	cmd.Env = append(os.Environ(), h.Env())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token: %v: %s", err, out)
	}
	return h
}

// URI is the pkcs11: URI of the key labelled object in this token, with
// its PIN read from pinFile ("" for none).
func (h *SoftHSM) URI(object, pinFile string) string {
	u := fmt.Sprintf("pkcs11:token=%s;object=%s?module-path=%s", esc(h.Label), esc(object), h.Module)
	if pinFile != "" {
		u += "&pin-source=file:" + pinFile
	}
	return u
}

func esc(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// WritePIN writes pin to path, mode 0600, and returns path.
func WritePIN(t testing.TB, path, pin string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// StartSWTPMWithEK is StartSWTPM for a TPM manufactured like a real one:
// swtpm_setup creates its RSA and ECC endorsement keys and EK
// certificates (in NV, as a manufacturer does), signed by a local CA made
// in dir (swtpm_localca). It returns the TPM and the CA's certificates (a
// PEM file with the root and the issuing CA): the "manufacturer CA" an
// issuer trusts.
func StartSWTPMWithEK(t testing.TB, dir string) (*SWTPM, string) {
	t.Helper()
	setup := testenv.Command(t, "swtpm_setup")
	localca := testenv.Command(t, "swtpm_localca")
	ca := filepath.Join(dir, "ekca")
	state := filepath.Join(dir, "state")
	for _, d := range []string{ca, state} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"localca.conf":    fmt.Sprintf("statedir = %s\nsigningkey = %s/signkey.pem\nissuercert = %s/issuercert.pem\ncertserial = %s/certserial\n", ca, ca, ca, ca),
		"localca.options": "--platform-manufacturer Sallyport\n--platform-version 2.1\n--platform-model Test\n",
	}
	files["setup.conf"] = fmt.Sprintf("create_certs_tool = %s\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = %s\n",
		localca, filepath.Join(dir, "localca.conf"), filepath.Join(dir, "localca.options"))
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(setup, "--tpm2", "--tpmstate", state, "--create-ek-cert", "--config", filepath.Join(dir, "setup.conf"), "--overwrite")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("swtpm_setup: %v\n%s", err, out)
	}
	var pemCAs []byte
	for _, f := range []string{"swtpm-localca-rootca-cert.pem", "issuercert.pem"} {
		b, err := os.ReadFile(filepath.Join(ca, f))
		if err != nil {
			t.Fatal(err)
		}
		pemCAs = append(pemCAs, b...)
	}
	caFile := filepath.Join(dir, "ek-ca.pem")
	if err := os.WriteFile(caFile, pemCAs, 0o644); err != nil {
		t.Fatal(err)
	}
	return StartSWTPM(t, dir), caFile
}
