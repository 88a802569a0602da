package ca

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/pki"
)

// TestKeyOriginOnlyForCSRs: the CA vouches for a hardware origin only when
// it signs a device's CSR; a key it made itself is a file, and an unknown
// origin is refused.
func TestKeyOriginOnlyForCSRs(t *testing.T) {
	p := New(t.TempDir())
	if err := p.Init(InitOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.IssueDevice(IssueOptions{Name: "alice", KeyOrigin: pki.KeyOriginTPM}); err == nil || !strings.Contains(err.Error(), "only when signing a device's CSR") {
		t.Fatalf("IssueDevice with a key origin: %v", err)
	}
	key, _ := GenerateKey(KeyECDSA)
	csr, err := EncodeCSR("bob", key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.SignCSR(csr, IssueOptions{Name: "bob", KeyOrigin: "usb-stick"}); err == nil {
		t.Fatal("SignCSR took an unknown key origin")
	}
	is, err := p.SignCSR(csr, IssueOptions{Name: "bob", KeyOrigin: pki.KeyOriginPKCS11})
	if err != nil {
		t.Fatal(err)
	}
	if pki.KeyOriginOf(is.Cert) != pki.KeyOriginPKCS11 || is.Record.KeyOrigin != pki.KeyOriginPKCS11 {
		t.Fatalf("certificate %q, record %q: want pkcs11", pki.KeyOriginOf(is.Cert), is.Record.KeyOrigin)
	}
}

// TestAttestedOriginNeedsTPMAndAK: an attested origin is a TPM's, with the
// attestation key that certified it; anything else is a caller's bug the
// CA refuses rather than records. Mutation caught: dropping that check in
// issueLocked.
func TestAttestedOriginNeedsTPMAndAK(t *testing.T) {
	p := New(t.TempDir())
	if err := p.Init(InitOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, o := range []IssueOptions{
		{KeyOrigin: pki.KeyOriginPKCS11, Attested: true, AKPublic: []byte{1}},
		{KeyOrigin: pki.KeyOriginTPM, Attested: true},
	} {
		key, _ := GenerateKey(KeyECDSA)
		name := fmt.Sprintf("dev%d", i)
		csr, err := EncodeCSR(name, key)
		if err != nil {
			t.Fatal(err)
		}
		o.Name = name
		if is, err := p.SignCSR(csr, o); err == nil || !strings.Contains(err.Error(), "attested key origin") {
			t.Errorf("%+v: issued (%v), err %v", o, is != nil, err)
		}
	}
}
