package client

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/hwkey"
	"github.com/sallyport/sallyport/pki/hwkey/hwtest"
	"github.com/sallyport/sallyport/tunnel"
)

// hwRenewProfile makes the client's profile a file like `pki bundle
// --key-tpm/--key-pkcs11` writes: the certificate inline, the key named
// by keyLine ("key_tpm = ..."), the certificate (for pub) half through
// its lifetime, and edit applied to its template.
func hwRenewProfile(t *testing.T, pub crypto.PublicKey, keyLine string, set func(*TLSConfig), edit func(*x509.Certificate)) func(*testCA, *Config) {
	return func(ca *testCA, cfg *Config) {
		tmpl := &x509.Certificate{
			SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: "alice-laptop", OrganizationalUnit: []string{"eng"}},
			NotBefore: time.Now().Add(-50 * time.Second), NotAfter: time.Now().Add(10 * time.Second),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if edit != nil {
			edit(tmpl)
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
		if err != nil {
			t.Fatal(err)
		}
		certPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
		cfg.TLS.CertPEM, cfg.TLS.KeyPEM = certPEM, ""
		set(&cfg.TLS)
		cfg.Path = filepath.Join(t.TempDir(), "alice.toml")
		text := "server = \"" + cfg.Server + "\"\nserver_name = \"gw.test\"\n\n[tls]\nca_pem = \"\"\"\n" + string(ca.pem) + "\"\"\"\ncert_pem = \"\"\"\n" + certPEM + "\"\"\"\n" +
			keyLine + "\n\n[tunnel]\ndriver = \"wireguard\"\n"
		if err := os.WriteFile(cfg.Path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRenewalInTPM: a laptop whose key is in the TPM renews with a new key
// made in the same TPM: the profile then names a new key file (no key in
// the profile), the renewed certificate is for the key in the TPM, and
// the next connection's handshake is signed there. With an attested
// origin, the request carries the TPM's certify of the new key by the
// enrollment's attestation key, which verifies against the AK in the
// certificate.
func TestRenewalInTPM(t *testing.T) {
	for _, attested := range []bool{false, true} {
		t.Run(fmt.Sprintf("attested=%v", attested), func(t *testing.T) {
			dir := t.TempDir()
			var tpm *hwtest.SWTPM
			if attested {
				tpm, _ = hwtest.StartSWTPMWithEK(t, t.TempDir())
			} else {
				tpm = hwtest.StartSWTPM(t, t.TempDir())
			}
			keyData, s, err := hwkey.GenerateTPM(tpm.Socket, hwkey.ECDSAP256, "alice")
			if err != nil {
				t.Fatal(err)
			}
			keyFile := filepath.Join(dir, "alice-laptop.tpmkey")
			os.WriteFile(keyFile, keyData, 0o600)
			var akPublic []byte
			edit := func(*x509.Certificate) {}
			if attested {
				a, akFile, err := hwkey.AttestTPM(tpm.Socket, keyData)
				if err != nil {
					t.Fatal(err)
				}
				os.WriteFile(AKFile(keyFile, "alice-laptop"), akFile, 0o600)
				akPublic = a.AKPublic
				val, _ := asn1.Marshal(akPublic)
				edit = func(c *x509.Certificate) {
					c.Policies = []x509.OID{pki.KeyOriginAttestedPolicy()}
					c.ExtraExtensions = []pkix.Extension{{Id: pki.OIDAttestationKey, Value: val}}
				}
			}
			e := startClient(t, envOpt{editCA: hwRenewProfile(t, s.Public(), fmt.Sprintf("key_tpm = %q\ntpm_device = %q", keyFile, tpm.Socket),
				func(c *TLSConfig) { c.KeyTPM, c.TPMDevice = keyFile, tpm.Socket }, edit)})
			srv, h := e.up(renewConfig(0.5))
			if !tunnel.HasCap(h.Caps, tunnel.CapRenew) {
				t.Fatalf("a TPM-keyed profile does not offer renewal (caps %v)", h.Caps)
			}
			renewed, attestation := answerRenewalWith(t, srv, e.ca, time.Hour, false)
			e.status("one renewal", func(st Status) bool { return st.Renewals == 1 })

			cfg, err := LoadConfig(e.c.cfg.Path)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.TLS.KeyTPM == keyFile || cfg.TLS.KeyPEM != "" || !strings.HasPrefix(filepath.Base(cfg.TLS.KeyTPM), "alice-laptop-r") {
				t.Fatalf("profile after renewal names key_tpm %q key_pem %q, want a new TPM key file", cfg.TLS.KeyTPM, cfg.TLS.KeyPEM)
			}
			next, err := hwkey.OpenTPM(cfg.TLS.KeyTPM, tpm.Socket)
			if err != nil {
				t.Fatal(err)
			}
			if !pki.SamePublicKey(next.Public(), renewed.PublicKey) || pki.SamePublicKey(next.Public(), s.Public()) {
				t.Fatal("the renewed certificate is not for a new key in the TPM")
			}
			if raw, _ := os.ReadFile(e.c.cfg.Path); strings.Contains(string(raw), "PRIVATE KEY") {
				t.Fatal("the renewed profile holds a private key")
			}
			if st := e.c.Status(); !strings.Contains(st.KeyLocation, cfg.TLS.KeyTPM) {
				t.Errorf("status key location %q, want the new key file", st.KeyLocation)
			}
			if attested {
				if err := hwkey.VerifyRenewalAttestation(akPublic, attestation, renewed.PublicKey); err != nil {
					t.Fatalf("renewal attestation: %v", err)
				}
			} else if len(attestation) != 0 {
				t.Errorf("a vouched-for device sent an attestation")
			}
			srv.tls.Close()
			s2 := e.gw.accept(t)
			if got := s2.tls.ConnectionState().PeerCertificates[0]; !got.Equal(renewed) {
				t.Fatalf("reconnected with serial %s, want the renewed %s", got.SerialNumber, renewed.SerialNumber)
			}
		})
	}
}

// TestRenewedName: renewal names replace the previous renewal's time.
func TestRenewedName(t *testing.T) {
	now := time.Date(2026, 12, 7, 19, 30, 0, 0, time.UTC)
	for in, want := range map[string]string{
		"alice-laptop":                   "alice-laptop-r20261207T193000Z",
		"alice-laptop-r20261101T080000Z": "alice-laptop-r20261207T193000Z",
		"my-router":                      "my-router-r20261207T193000Z",
	} {
		if got := renewedName(in, now); got != want {
			t.Errorf("renewedName(%q) = %q, want %q", in, got, want)
		}
	}
	u, err := withObject("pkcs11:token=a;object=sallyport;id=%01?module-path=/m.so&pin-source=file:/p", "sallyport-r20261207T193000Z")
	if err != nil || u != "pkcs11:token=a;object=sallyport-r20261207T193000Z?module-path=/m.so&pin-source=file:/p" {
		t.Errorf("withObject: %q %v", u, err)
	}
}
