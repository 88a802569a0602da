package server

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"math/big"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/hwkey"
	"github.com/sallyport/sallyport/pki/hwkey/hwtest"
	"github.com/sallyport/sallyport/tunnel"
)

// hwPolicyTOML is the eng policy demanding hardware-held keys.
const hwPolicyTOML = `
[[policy]]
name = "eng"
match = { ou = ["eng"] }
allow = ["192.168.77.0/24 udp/53", "192.168.88.0/24"]
require_hardware_key = true
`

// renewWith sends a renewal request with an attestation and returns the answer.
func (d *device) renewWith(t *testing.T, der, attestation []byte) tunnel.RenewReply {
	t.Helper()
	b, err := tunnel.EncodeRenewRequest(tunnel.RenewRequest{CSR: der, Attestation: attestation})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.w.WriteControl(tunnel.FrameRenew, b); err != nil {
		t.Fatal(err)
	}
	typ, payload, ok := d.next(10 * time.Second)
	if !ok || typ != tunnel.FrameRenewed {
		t.Fatalf("want a renewed frame, got %#x (ok %v)", typ, ok)
	}
	r, err := tunnel.DecodeRenewReply(payload)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestRenewalKeepsAttestedOrigin: under a policy that requires hardware
// keys, a device whose TPM origin was attested renews when its TPM
// certifies the new key with the enrollment's attestation key, and the
// renewed certificate keeps the attested origin and the AK. Without that
// evidence the renewed certificate would say nothing about its key, so
// the gateway refuses it (hardware-key-required); evidence for another
// key is refused as invalid.
func TestRenewalKeepsAttestedOrigin(t *testing.T) {
	h := newRenewalHarness(t, "")
	h.reload(renewalTOML + hwPolicyTOML)
	tpm, _ := hwtest.StartSWTPMWithEK(t, t.TempDir())
	keyData, key, err := hwkey.GenerateTPM(tpm.Socket, hwkey.ECDSAP256, "alice")
	if err != nil {
		t.Fatal(err)
	}
	att, akFile, err := hwkey.AttestTPM(tpm.Socket, keyData)
	if err != nil {
		t.Fatal(err)
	}
	akExt, _ := asn1.Marshal(att.AKPublic)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(4242), Subject: pkix.Name{CommonName: "alice", OrganizationalUnit: []string{"eng"}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		Policies: []x509.OID{pki.KeyOriginAttestedPolicy()}, ExtraExtensions: []pkix.Extension{{Id: pki.OIDAttestationKey, Value: akExt}},
	}, h.ca.cert, key.Public(), h.ca.key)
	if err != nil {
		t.Fatal(err)
	}
	d, pc := h.renewDevice(tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})
	if !tunnel.HasCap(pc.Caps, tunnel.CapRenew) {
		t.Fatalf("renewal not offered: %v", pc.Caps)
	}
	next := func() ([]byte, hwkey.Signer) {
		data, s, err := hwkey.GenerateTPM(tpm.Socket, hwkey.ECDSAP256, "alice next")
		if err != nil {
			t.Fatal(err)
		}
		return data, s
	}
	certify := func(keyFile []byte) []byte {
		a, err := hwkey.CertifyWithAK(tpm.Socket, akFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(a)
		return b
	}

	newData, newKey := next()
	if r := d.renewWith(t, request(t, newKey, d.binding(t)), nil); r.Reason != string(tunnel.ReasonHardwareKey) {
		t.Fatalf("renewal without the TPM's evidence: reason %q, want %s", r.Reason, tunnel.ReasonHardwareKey)
	}
	otherData, _ := next()
	if r := d.renewWith(t, request(t, newKey, d.binding(t)), certify(otherData)); r.Reason != string(tunnel.ReasonRenewInvalid) {
		t.Fatalf("renewal with evidence for another key: reason %q, want %s", r.Reason, tunnel.ReasonRenewInvalid)
	}
	r := d.renewWith(t, request(t, newKey, d.binding(t)), certify(newData))
	if r.Reason != "" || len(r.Certs) == 0 {
		t.Fatalf("attested renewal refused: %q", r.Reason)
	}
	leaf := parseChain(t, r.Certs)[0]
	if !pki.SamePublicKey(leaf.PublicKey, newKey.Public()) || !pki.KeyOriginAttested(leaf) || !bytes.Equal(pki.AttestationKeyOf(leaf), att.AKPublic) {
		t.Fatalf("renewed certificate: attested %v, AK kept %v", pki.KeyOriginAttested(leaf), bytes.Equal(pki.AttestationKeyOf(leaf), att.AKPublic))
	}
}
