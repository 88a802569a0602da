package client

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki/hwkey"
	"github.com/sallyport/sallyport/pki/hwkey/hwtest"
)

// hwProfile writes a profile whose device key is in the TPM tpm and whose
// certificate ca signed for pub (the key's own, or another).
func hwProfile(t *testing.T, ca *testCA, tpmSock, keyFile string, pub any) string {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: "bob"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert := filepath.Join(dir, "bob.crt")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(filepath.Join(dir, "ca.crt"), ca.pem, 0o644)
	path := filepath.Join(dir, "bob.toml")
	conf := fmt.Sprintf("server = \"gw.test:443\"\n[tls]\nca = \"ca.crt\"\ncert = \"bob.crt\"\nkey_tpm = %q\ntpm_device = %q\n", keyFile, tpmSock)
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTPMKeyProfile: a profile naming a TPM key loads (its certificate is
// for the key in the TPM), status says where the key lives; a certificate
// for another key is refused at start, naming both.
func TestTPMKeyProfile(t *testing.T) {
	tpm := hwtest.StartSWTPM(t, t.TempDir())
	data, s, err := hwkey.GenerateTPM(tpm.Socket, hwkey.ECDSAP256, "bob")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "bob.tpmkey")
	os.WriteFile(keyFile, data, 0o600)
	ca := newTestCA(t, "Device CA")

	cfg, err := LoadConfig(hwProfile(t, ca, tpm.Socket, keyFile, s.Public()))
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	st := c.Status()
	if st.KeyKind != "tpm" || !strings.Contains(st.KeyLocation, keyFile) || !strings.Contains(st.KeyLocation, "TPM") {
		t.Errorf("status key %q %q, want the TPM and its key file", st.KeyKind, st.KeyLocation)
	}
	if c.material().cert.PrivateKey.(hwkey.Signer) == nil {
		t.Fatal("TLS certificate does not sign through the TPM")
	}

	_, _, other := ca.leaf(t, "x", nil)
	blk, _ := pem.Decode(other)
	k, _ := x509.ParsePKCS8PrivateKey(blk.Bytes)
	cfg, err = LoadConfig(hwProfile(t, ca, tpm.Socket, keyFile, k.(crypto.Signer).Public()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "is not for the key in TPM") {
		t.Fatalf("certificate for another key: %v", err)
	}
}

// TestFileKeyStatus: a key file is reported as a file.
func TestFileKeyStatus(t *testing.T) {
	ca := newTestCA(t, "Device CA")
	_, certPEM, keyPEM := ca.leaf(t, "alice", deviceLeaf)
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ca.crt"), ca.pem, 0o644)
	os.WriteFile(filepath.Join(dir, "d.crt"), certPEM, 0o644)
	os.WriteFile(filepath.Join(dir, "d.key"), keyPEM, 0o600)
	path := filepath.Join(dir, "c.toml")
	os.WriteFile(path, []byte("server = \"gw.test:443\"\n[tls]\nca = \"ca.crt\"\ncert = \"d.crt\"\nkey = \"d.key\"\n"), 0o600)
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if st := c.Status(); st.KeyKind != "file" || !strings.Contains(st.KeyLocation, filepath.Join(dir, "d.key")) {
		t.Errorf("status key %q %q", st.KeyKind, st.KeyLocation)
	}
}
