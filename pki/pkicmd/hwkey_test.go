package pkicmd

import (
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/hwkey"
	"github.com/sallyport/sallyport/pki/hwkey/hwtest"
)

// noKeyOnDisk fails when any file under dir holds a PEM private key a
// program could use (a TPM key file is a wrapped blob, not such a key).
func noKeyOnDisk(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if _, err := pki.ParseKey(data); err == nil {
			t.Errorf("%s holds a usable private key", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// csrKey returns the public key of the CSR at path.
func csrKey(t *testing.T, path string) any {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil || csr.CheckSignature() != nil || csr.Subject.CommonName != "bob" {
		t.Fatalf("CSR: %v %v", err, csr.Subject)
	}
	return csr.PublicKey
}

// TestCSRInTPM: "pki csr --tpm" makes the key in the TPM and a CSR for it,
// keeps only the TPM key file; "pki sign" signs it; "pki bundle --key-tpm"
// writes a profile with the key's reference and no key, and refuses the
// mixes that would be wrong (a CSR device without the reference, a
// CA-made key with one).
func TestCSRInTPM(t *testing.T) {
	dir := newPKI(t)
	tpm := hwtest.StartSWTPM(t, t.TempDir())
	laptop := filepath.Join(t.TempDir(), "laptop")
	out := mustRun(t, "csr", "--dir", laptop, "--device", "bob", "--tpm", "--tpm-device", tpm.Socket)
	keyFile := filepath.Join(laptop, "devices", "bob.tpmkey")
	if !strings.Contains(out, `key_tpm = "`+keyFile+`"`) || !strings.Contains(out, "tpm_device") || !strings.Contains(out, "cannot be exported") {
		t.Errorf("csr output does not name the key reference:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(laptop, "devices", "bob.key")); err == nil {
		t.Error("a key file was written next to the TPM key")
	}
	noKeyOnDisk(t, laptop)
	s, err := hwkey.OpenTPM(keyFile, tpm.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(csrKey(t, filepath.Join(laptop, "devices", "bob.csr"))) {
		t.Fatal("the CSR is not for the key in the TPM")
	}
	if code, _, errs := run(t, "csr", "--dir", laptop, "--device", "bob", "--tpm", "--tpm-device", tpm.Socket); code != 1 || !strings.Contains(errs, "already exists") {
		t.Errorf("second csr --tpm for bob: exit %d %s", code, errs)
	}

	if code, _, _ := run(t, "sign", "--dir", dir, "--csr", filepath.Join(laptop, "devices", "bob.csr"), "--device", "bob", "--key-origin", "laptop-says-so"); code != 2 {
		t.Errorf("sign --key-origin laptop-says-so: exit %d, want 2", code)
	}
	signed := mustRun(t, "sign", "--dir", dir, "--csr", filepath.Join(laptop, "devices", "bob.csr"), "--device", "bob", "--group", "eng", "--key-origin", "tpm")
	if !strings.Contains(signed, "key origin: tpm (vouched for by you") {
		t.Errorf("sign output does not confirm the key origin:\n%s", signed)
	}
	if c := loadLeaf(t, filepath.Join(dir, "devices", "bob.crt"))[0]; pki.KeyOriginOf(c) != pki.KeyOriginTPM {
		t.Errorf("certificate key origin %q, want tpm", pki.KeyOriginOf(c))
	}
	if show := mustRun(t, "show", filepath.Join(dir, "devices", "bob.crt")); !strings.Contains(show, "in the device's TPM (vouched for by the issuer)") {
		t.Errorf("show does not say where the key is:\n%s", show)
	}
	if code, _, errs := run(t, "bundle", "--dir", dir, "--device", "bob", "--server", "vpn:443"); code != 1 || !strings.Contains(errs, "--key-tpm") {
		t.Errorf("bundle of a CSR device without a key reference: exit %d %s", code, errs)
	}
	prof := filepath.Join(t.TempDir(), "bob.toml")
	mustRun(t, "bundle", "--dir", dir, "--device", "bob", "--server", "vpn:443", "--key-tpm", keyFile, "--tpm-device", tpm.Socket, "-o", prof)
	data, err := os.ReadFile(prof)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		TLS map[string]string `toml:"tls"`
	}
	if _, err := toml.Decode(string(data), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.TLS["key_tpm"] != keyFile || cfg.TLS["tpm_device"] != tpm.Socket || cfg.TLS["key_pem"] != "" || cfg.TLS["cert_pem"] == "" {
		t.Errorf("profile [tls] = %v", cfg.TLS)
	}
	if strings.Contains(string(data), "PRIVATE KEY") {
		t.Error("the hardware-key profile holds a private key")
	}

	issue(t, dir, "--device", "carol")
	if code, _, errs := run(t, "bundle", "--dir", dir, "--device", "carol", "--server", "vpn:443", "--key-tpm", keyFile); code != 1 || !strings.Contains(errs, "not hardware") {
		t.Errorf("hardware profile for a CA-made key: exit %d %s", code, errs)
	}
	for _, args := range [][]string{
		{"csr", "--dir", laptop, "--device", "x", "--tpm", "--pkcs11", "pkcs11:token=a;object=b?module-path=/m.so"},
		{"csr", "--dir", laptop, "--device", "x", "--tpm-device", tpm.Socket},
		{"csr", "--dir", laptop, "--device", "x", "--tpm", "--key", "ed25519"},
		{"bundle", "--dir", dir, "--device", "bob", "--server", "vpn:443", "--key-tpm", "rel.tpmkey"},
		{"bundle", "--dir", dir, "--device", "bob", "--server", "vpn:443", "--key-pkcs11", "pkcs11:token=a?module-path=/m.so"},
	} {
		if code, _, _ := run(t, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (usage)", args, code)
		}
	}
}

// TestSignRequireHardware: "pki csr --tpm" on a TPM with an EK certificate
// writes an attestation; "pki sign --require-hardware" verifies it against
// the TPM maker's CA, challenges, and signs only after the laptop's TPM
// answered; the certificate then records an attested TPM origin. A wrong
// answer, an untrusted maker CA, a CSR for another key and a missing
// attestation are refused.
func TestSignRequireHardware(t *testing.T) {
	dir := newPKI(t)
	tpm, ekCA := hwtest.StartSWTPMWithEK(t, t.TempDir())
	laptop := filepath.Join(t.TempDir(), "laptop")
	out := mustRun(t, "csr", "--dir", laptop, "--device", "bob", "--tpm", "--tpm-device", tpm.Socket)
	attest := filepath.Join(laptop, "devices", "bob.attest")
	if !strings.Contains(out, "attestation: "+attest) {
		t.Fatalf("csr --tpm on a TPM with an EK certificate wrote no attestation:\n%s", out)
	}
	noKeyOnDisk(t, laptop)
	csr := filepath.Join(laptop, "devices", "bob.csr")
	sign := func(extra ...string) (int, string, string) {
		return run(t, append([]string{"sign", "--dir", dir, "--csr", csr, "--device", "bob", "--group", "eng", "--require-hardware", "--attestation", attest, "--ek-ca", ekCA}, extra...)...)
	}
	code, out, errs := sign()
	if code != 0 || !strings.Contains(out, "not signed yet") {
		t.Fatalf("first sign: exit %d\n%s%s", code, out, errs)
	}
	if _, err := os.Stat(filepath.Join(dir, "devices", "bob.crt")); err == nil {
		t.Fatal("a certificate was issued before the challenge was answered")
	}
	challenge := filepath.Join(dir, "devices", "bob.challenge")

	// A forged answer is refused.
	forged := filepath.Join(t.TempDir(), "forged.response")
	os.WriteFile(forged, []byte(`{"device":"bob","secret":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`), 0o644)
	if code, _, errs := sign("--activation", forged); code != 1 || !strings.Contains(errs, "does not match") {
		t.Errorf("forged activation: exit %d %s", code, errs)
	}

	out = mustRun(t, "csr", "--dir", laptop, "--device", "bob", "--tpm-device", tpm.Socket, "--activate", challenge)
	response := filepath.Join(laptop, "devices", "bob.response")
	if !strings.Contains(out, response) {
		t.Fatalf("activate output:\n%s", out)
	}
	// A thief with a TPM of its own (swtpm: a key in software, really)
	// sends its key and AK with bob's EK certificate, which the maker CA
	// vouches for, and bob's copied answer: the challenge of this request
	// is not the one bob's TPM opened, so the answer does not fit it.
	// Mutation caught: an activation secret that covers only the device
	// name (not the CSR and attestation).
	thief := filepath.Join(t.TempDir(), "thief")
	thiefTPM, _ := hwtest.StartSWTPMWithEK(t, t.TempDir())
	mustRun(t, "csr", "--dir", thief, "--device", "bob", "--tpm", "--tpm-device", thiefTPM.Socket)
	var mine, bobs map[string]any
	for _, f := range []struct {
		path string
		into *map[string]any
	}{{filepath.Join(thief, "devices", "bob.attest"), &mine}, {attest, &bobs}} {
		b, err := os.ReadFile(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, f.into); err != nil {
			t.Fatal(err)
		}
	}
	mine["ek_cert"] = bobs["ek_cert"]
	mixed, _ := json.Marshal(mine)
	mixedPath := filepath.Join(thief, "mixed.attest")
	if err := os.WriteFile(mixedPath, mixed, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := run(t, "sign", "--dir", dir, "--csr", filepath.Join(thief, "devices", "bob.csr"), "--device", "bob", "--group", "eng",
		"--require-hardware", "--attestation", mixedPath, "--ek-ca", ekCA, "--activation", response); code != 1 || !strings.Contains(errs, "does not match") {
		t.Fatalf("bob's answer replayed for a software TPM's key with bob's EK certificate: exit %d\n%s%s", code, out, errs)
	}

	code, out, errs = sign("--activation", response)
	if code != 0 || !strings.Contains(out, "key origin: tpm") {
		t.Fatalf("second sign: exit %d\n%s%s", code, out, errs)
	}
	c := loadLeaf(t, filepath.Join(dir, "devices", "bob.crt"))[0]
	if pki.KeyOriginOf(c) != pki.KeyOriginTPM || !pki.KeyOriginAttested(c) {
		t.Errorf("certificate origin %q attested %v", pki.KeyOriginOf(c), pki.KeyOriginAttested(c))
	}
	if show := mustRun(t, "show", filepath.Join(dir, "devices", "bob.crt")); !strings.Contains(show, "attested") {
		t.Errorf("show:\n%s", show)
	}

	// Refusals before any challenge.
	otherCA := newPKI(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"untrusted TPM maker", []string{"--ek-ca", filepath.Join(otherCA, "ca.crt")}, "does not chain to a TPM manufacturer CA"},
	} {
		args := append([]string{"sign", "--dir", dir, "--csr", csr, "--device", "bob2", "--override-cn", "--require-hardware", "--attestation", attest}, tc.args...)
		if code, _, errs := run(t, args...); code != 1 || !strings.Contains(errs, tc.want) {
			t.Errorf("%s: exit %d %s", tc.name, code, errs)
		}
	}
	mustRun(t, "csr", "--dir", laptop, "--device", "eve")
	if code, _, errs := run(t, "sign", "--dir", dir, "--csr", filepath.Join(laptop, "devices", "eve.csr"), "--device", "eve",
		"--require-hardware", "--attestation", attest, "--ek-ca", ekCA); code != 1 || !strings.Contains(errs, "not the CSR's key") {
		t.Errorf("a key-file CSR with another key's attestation: exit %d %s", code, errs)
	}
	if code, _, _ := run(t, "sign", "--dir", dir, "--csr", csr, "--device", "bob3", "--require-hardware"); code != 2 {
		t.Errorf("--require-hardware without an attestation: exit %d, want 2", code)
	}
}
