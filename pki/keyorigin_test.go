package pki

import (
	"crypto/x509"
	"testing"
)

// TestKeyOriginOf: the issuer's policy OIDs map to the origin; none, an
// unknown one, or two different ones say nothing.
func TestKeyOriginOf(t *testing.T) {
	tpm, err := KeyOriginPolicy(KeyOriginTPM)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := KeyOriginPolicy(KeyOriginPKCS11)
	other, _ := x509.ParseOID("2.5.29.32.0") // anyPolicy
	for _, tt := range []struct {
		name     string
		policies []x509.OID
		want     string
	}{
		{"none", nil, ""},
		{"tpm", []x509.OID{tpm}, KeyOriginTPM},
		{"token", []x509.OID{other, tok}, KeyOriginPKCS11},
		{"tpm twice", []x509.OID{tpm, tpm}, KeyOriginTPM},
		{"both", []x509.OID{tpm, tok}, ""},
		{"other only", []x509.OID{other}, ""},
	} {
		if got := KeyOriginOf(&x509.Certificate{Policies: tt.policies}); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
	if _, err := KeyOriginPolicy("software"); err == nil {
		t.Error("KeyOriginPolicy accepted an unknown origin")
	}
	if KeyOriginOf(nil) != "" {
		t.Error("nil certificate has an origin")
	}
}

// TestKeyOriginAttested: attested means the TPM-attested policy and no
// other origin beside it; a certificate naming two origins says nothing,
// attested included. Mutation caught: KeyOriginAttested not asking
// KeyOriginOf first.
func TestKeyOriginAttested(t *testing.T) {
	vouched, _ := KeyOriginPolicy(KeyOriginTPM)
	tok, _ := KeyOriginPolicy(KeyOriginPKCS11)
	for _, tt := range []struct {
		name     string
		policies []x509.OID
		want     bool
	}{
		{"attested", []x509.OID{KeyOriginAttestedPolicy()}, true},
		{"attested and vouched TPM", []x509.OID{vouched, KeyOriginAttestedPolicy()}, true},
		{"vouched only", []x509.OID{vouched}, false},
		{"attested and a token", []x509.OID{KeyOriginAttestedPolicy(), tok}, false},
		{"none", nil, false},
	} {
		if got := KeyOriginAttested(&x509.Certificate{Policies: tt.policies}); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	if KeyOriginAttested(nil) {
		t.Error("nil certificate attested")
	}
}
