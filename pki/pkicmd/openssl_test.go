package pkicmd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/internal/testenv"
)

// TestOpenSSLCrossCheck verifies our certificates and CRL with an
// independent implementation (openssl).
func TestOpenSSLCrossCheck(t *testing.T) {
	openssl := testenv.Command(t, "openssl")
	ossl := func(args ...string) (string, error) {
		out, err := exec.Command(openssl, args...).CombinedOutput()
		return string(out), err
	}
	for _, tt := range []struct {
		name  string
		key   string
		inter bool
	}{{"ecdsa-intermediate", "ecdsa", true}, {"ed25519-intermediate", "ed25519", true}, {"rsa3072-root-only", "rsa3072", false}} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.key == "rsa3072" && testing.Short() {
				t.Skip("rsa3072 keygen skipped in -short")
			}
			args := []string{"--key", tt.key}
			// The chain for rsa3072 is root-only so the test makes one RSA key, not two.
			if tt.inter {
				args = append(args, "--intermediate")
			}
			dir := newPKI(t, args...)
			root, inter := filepath.Join(dir, "root.crt"), filepath.Join(dir, "intermediate.crt")
			if !tt.inter {
				inter = root // -untrusted with the root is harmless
			}
			dev := issue(t, dir, "--device", "alice", "--user", "alice", "--group", "eng")
			crt := filepath.Join(dir, "devices", "alice.crt")
			srv := filepath.Join(dir, "servers", "vpn.example.com.crt")
			mustRun(t, "server", "--dir", dir, "--name", "vpn.example.com")

			if out, err := ossl("verify", "-purpose", "sslclient", "-CAfile", root, "-untrusted", inter, crt); err != nil || !strings.Contains(out, "OK") {
				t.Fatalf("openssl rejects the device cert: %v\n%s", err, out)
			}
			if out, err := ossl("verify", "-purpose", "sslserver", "-CAfile", root, "-untrusted", inter, crt); err == nil {
				t.Errorf("openssl accepts the device cert as a server:\n%s", out)
			}
			if out, err := ossl("verify", "-purpose", "sslserver", "-CAfile", root, "-untrusted", inter, srv); err != nil {
				t.Errorf("openssl rejects the server cert: %v\n%s", err, out)
			}
			crl := filepath.Join(dir, "crl.pem")
			if out, err := ossl("verify", "-purpose", "sslclient", "-crl_check", "-CAfile", root, "-untrusted", inter, "-CRLfile", crl, crt); err != nil {
				t.Fatalf("openssl with empty CRL rejects: %v\n%s", err, out)
			}
			mustRun(t, "revoke", "--dir", dir, strings.ToUpper(dev), "--reason", "keyCompromise")
			out, err := ossl("verify", "-purpose", "sslclient", "-crl_check", "-CAfile", root, "-untrusted", inter, "-CRLfile", crl, crt)
			if err == nil || !strings.Contains(out, "revoked") {
				t.Errorf("openssl accepts a revoked cert: %v\n%s", err, out)
			}
			text, err := ossl("crl", "-in", crl, "-noout", "-text")
			if err != nil || !strings.Contains(strings.ToLower(text), strings.ToLower(dev)) || !strings.Contains(text, "Key Compromise") || !strings.Contains(text, "Next Update") {
				t.Errorf("openssl crl: %v\n%s", err, text)
			}
			// The key files are PKCS#8 that openssl reads too.
			if out, err := ossl("pkey", "-in", filepath.Join(dir, "devices", "alice.key"), "-noout"); err != nil {
				t.Errorf("openssl pkey: %v\n%s", err, out)
			}
		})
	}
	// A CSR made by openssl, asking for serverAuth and CA, is signed as a plain device cert.
	dir := newPKI(t)
	tmp := t.TempDir()
	key, csr := filepath.Join(tmp, "k.pem"), filepath.Join(tmp, "r.csr")
	if out, err := ossl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
		"-subj", "/CN=ossl-dev/OU=admins", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "extendedKeyUsage=serverAuth"); err != nil {
		t.Fatalf("openssl req: %v\n%s", err, out)
	}
	mustRun(t, "sign", "--dir", dir, "--csr", csr, "--device", "ossl-dev")
	crt := filepath.Join(dir, "devices", "ossl-dev.crt")
	if out, err := ossl("verify", "-purpose", "sslclient", "-CAfile", filepath.Join(dir, "ca.crt"), crt); err != nil {
		t.Errorf("signed openssl CSR: %v\n%s", err, out)
	}
	text, _ := ossl("x509", "-in", crt, "-noout", "-text")
	if strings.Contains(text, "CA:TRUE") || strings.Contains(text, "Server Authentication") || strings.Contains(text, "admins") {
		t.Errorf("CSR extensions leaked:\n%s", text)
	}
	_ = os.Remove(key)
}
