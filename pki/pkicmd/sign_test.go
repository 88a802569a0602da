package pkicmd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var oidCN = asn1.ObjectIdentifier{2, 5, 4, 3}

// subjectCSR is a CSR for a fresh key with subject; raw, when set, is the
// DER subject used as is (for a multi-valued RDN).
func subjectCSR(t *testing.T, subject pkix.Name, raw []byte) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject, RawSubject: raw}, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "req.csr")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The CN rules of `pki sign` (issue 9, finding 7): the admin names the
// device; the CSR must carry exactly one CN and it must be that name, or
// the admin overrides it explicitly. A CSR with two CNs used to yield a
// certificate named after the second, which may be another device.
func TestSignCNRules(t *testing.T) {
	dir := newPKI(t)
	twoCNs := pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidCN, Value: "alice-laptop"}, {Type: oidCN, Value: "ceo-laptop"}}}
	multiRDN, err := asn1.Marshal(pkix.RDNSequence{{{Type: oidCN, Value: "alice-laptop"}, {Type: oidCN, Value: "ceo-laptop"}}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		subject pkix.Name
		raw     []byte
		args    []string
		code    int
		want    string // in stderr, or the issued certificate's CN when code == 0
	}{
		{"CN matches", pkix.Name{CommonName: "alice-laptop"}, nil, []string{"--device", "alice-laptop"}, 0, "alice-laptop"},
		{"CN differs", pkix.Name{CommonName: "ceo-laptop"}, nil, []string{"--device", "bob-laptop"}, 1, `CN "ceo-laptop" is not the device name "bob-laptop"`},
		{"CN differs, overridden", pkix.Name{CommonName: "ceo-laptop"}, nil, []string{"--device", "carol-laptop", "--override-cn"}, 0, "carol-laptop"},
		{"two CNs", twoCNs, nil, []string{"--device", "ceo-laptop"}, 1, `2 CNs ["alice-laptop" "ceo-laptop"]`},
		{"two CNs, overridden", twoCNs, nil, []string{"--device", "dave-laptop", "--override-cn"}, 1, "2 CNs"},
		{"two CNs in one RDN", pkix.Name{}, multiRDN, []string{"--device", "ceo-laptop", "--override-cn"}, 1, "2 CNs"},
		{"no CN", pkix.Name{Organization: []string{"Acme"}}, nil, []string{"--device", "erin-laptop"}, 1, "no CN"},
		{"no CN, overridden", pkix.Name{}, nil, []string{"--device", "erin-laptop", "--override-cn"}, 1, "no CN"},
		{"no --device", pkix.Name{CommonName: "frank-laptop"}, nil, nil, 2, "--device is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr := subjectCSR(t, tt.subject, tt.raw)
			code, _, stderr := run(t, append([]string{"sign", "--dir", dir, "--csr", csr}, tt.args...)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.code, stderr)
			}
			if code != 0 {
				if !strings.Contains(stderr, tt.want) {
					t.Fatalf("stderr %q, want %q", stderr, tt.want)
				}
				return
			}
			leaf := loadLeaf(t, filepath.Join(dir, "devices", tt.want+".crt"))[0]
			if leaf.Subject.CommonName != tt.want || len(leaf.Subject.Names) != 1 {
				t.Fatalf("issued subject %v, want only CN=%s", leaf.Subject, tt.want)
			}
		})
	}
	// Nothing was issued for a refused CSR.
	for _, name := range []string{"bob-laptop", "ceo-laptop", "dave-laptop", "erin-laptop", "frank-laptop"} {
		if _, err := os.Stat(filepath.Join(dir, "devices", name+".crt")); err == nil {
			t.Errorf("a refused CSR was issued as %s", name)
		}
	}
}
