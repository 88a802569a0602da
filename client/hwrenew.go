package client

// Renewal of a device key that lives in hardware (docs/hardware-keys.md):
// the next key is made in the same TPM or token, never in software. A TPM
// key gets a new key file next to the current one (the profile's key_tpm
// then names it); a token key gets a new object, labelled after the
// current one with the time (key_pkcs11 then names it). A device whose
// TPM origin was attested at enrollment also has the TPM certify the new
// key with the same attestation key, so the gateway can carry the
// attested origin to the renewed certificate.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/internal/userfile"
	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/hwkey"
)

func init() { hardwareKeyMaker = hwKeyMakerFor }

// hwKeyMakerFor is the KeyMaker of a profile whose key is in hardware.
func hwKeyMakerFor(cfg *Config, mat *material) (KeyMaker, string) {
	alg, why := algorithmLike(mat.leaf.PublicKey)
	if why != "" {
		return nil, why
	}
	switch mat.keyKind {
	case hwkey.KindTPM:
		return tpmKeyMaker{keyFile: cfg.TLS.KeyTPM, device: cfg.TLS.TPMDevice, alg: alg, leaf: mat.leaf}, ""
	case hwkey.KindPKCS11:
		u, err := hwkey.ParsePKCS11URI(cfg.TLS.KeyPKCS11)
		if err != nil {
			return nil, err.Error()
		}
		if u.Object == "" {
			return nil, "the token key is named by id= only; renewal labels the new key after the current one: add object= to tls.key_pkcs11"
		}
		return pkcs11KeyMaker{uri: cfg.TLS.KeyPKCS11, object: u.Object, alg: alg}, ""
	}
	return nil, "the device key is in " + string(mat.keyKind) + " hardware, which cannot make keys"
}

// algorithmLike picks the hardware algorithm of the current key.
func algorithmLike(pub crypto.PublicKey) (hwkey.Algorithm, string) {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		return hwkey.ECDSAP256, ""
	case *rsa.PublicKey:
		if p.N.BitLen() > 2048 {
			return hwkey.RSA3072, ""
		}
		return hwkey.RSA2048, ""
	}
	return "", fmt.Sprintf("a %T key cannot be made in hardware", pub)
}

// renewedName is the current name with the renewal time in place of an
// earlier one: alice-laptop.tpmkey -> alice-laptop-20261207T193000Z.tpmkey.
func renewedName(base string, now time.Time) string {
	if i := strings.LastIndex(base, "-r"); i > 0 && len(base)-i == len("-r20060102T150405Z") {
		if _, err := time.Parse("20060102T150405Z", base[i+2:]); err == nil {
			base = base[:i]
		}
	}
	return base + "-r" + now.UTC().Format("20060102T150405Z")
}

// tpmKeyMaker makes the next key in the same TPM.
type tpmKeyMaker struct {
	keyFile, device string
	alg             hwkey.Algorithm
	leaf            *x509.Certificate
}

func (m tpmKeyMaker) NewKey() (*NextKey, error) {
	data, s, err := hwkey.GenerateTPM(m.device, m.alg, "sallyport device key (renewed)")
	if err != nil {
		return nil, err
	}
	dir, base := filepath.Dir(m.keyFile), strings.TrimSuffix(filepath.Base(m.keyFile), ".tpmkey")
	path := filepath.Join(dir, renewedName(base, time.Now())+".tpmkey")
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("TPM key file %s exists already", path)
	}
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return nil, err
	}
	hwkey.SetFile(s, path)
	next := &NextKey{Signer: s, Settings: map[string]string{"key_tpm": path}, Discard: func() { os.Remove(path) }}
	next.Attestation = m.attest(data)
	return next, nil
}

// attest has the enrollment's attestation key certify the new key, when
// the certificate says the origin was attested and the AK's file (made by
// `pki csr --tpm`, DEVICE.ak.tpmkey next to the first key) is here.
// Without it the renewal still works; the gateway just cannot carry the
// attested origin.
func (m tpmKeyMaker) attest(keyFile []byte) []byte {
	if !pki.KeyOriginAttested(m.leaf) {
		return nil
	}
	ak, err := userfile.Read(AKFile(m.keyFile, pki.IdentityOf(m.leaf).Device), 64<<10)
	if err != nil {
		return nil
	}
	a, err := hwkey.CertifyWithAK(m.device, ak, keyFile)
	if err != nil {
		return nil
	}
	b, err := json.Marshal(a)
	if err != nil {
		return nil
	}
	return b
}

// AKFile is where `pki csr --tpm` keeps the attestation key of device
// whose first key file is in the directory of keyFile.
func AKFile(keyFile, device string) string {
	return filepath.Join(filepath.Dir(keyFile), device+".ak.tpmkey")
}

// pkcs11KeyMaker makes the next key in the same token.
type pkcs11KeyMaker struct {
	uri, object string
	alg         hwkey.Algorithm
}

func (m pkcs11KeyMaker) NewKey() (*NextKey, error) {
	label := renewedName(m.object, time.Now())
	uri, err := withObject(m.uri, label)
	if err != nil {
		return nil, err
	}
	s, err := hwkey.GeneratePKCS11(uri, m.alg)
	if err != nil {
		return nil, err
	}
	return &NextKey{Signer: s, Settings: map[string]string{"key_pkcs11": uri}, Discard: func() { _ = hwkey.DeleteKey(s) }}, nil
}

// withObject is the URI with object= set to label and any id= dropped (the
// new key gets its own).
func withObject(uri, label string) (string, error) {
	rest := strings.TrimPrefix(uri, "pkcs11:")
	path, query, hasQuery := strings.Cut(rest, "?")
	var attrs []string
	for _, a := range strings.Split(path, ";") {
		if strings.HasPrefix(a, "object=") || strings.HasPrefix(a, "id=") || a == "" {
			continue
		}
		attrs = append(attrs, a)
	}
	attrs = append(attrs, "object="+url.PathEscape(label))
	out := "pkcs11:" + strings.Join(attrs, ";")
	if hasQuery {
		out += "?" + query
	}
	if _, err := hwkey.ParsePKCS11URI(out); err != nil {
		return "", err
	}
	return out, nil
}
