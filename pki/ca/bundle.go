package ca

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/sallyport/sallyport/pki"
)

// Bundle returns a complete client.toml for device with the CA bundle, the
// device certificate chain and its key inline. server is HOST:PORT (port 443
// when missing); serverName defaults to HOST.
func (p *PKI) Bundle(device, server, serverName string) ([]byte, error) {
	return p.BundleWith(device, server, serverName, KeyRef{})
}

// KeyRef names a device key that lives in the laptop's hardware, as the
// client config names it: a TPM key file (and the TPM device, if not the
// default) or a pkcs11: URI. The zero KeyRef means the key is in the PKI
// directory and goes into the bundle.
type KeyRef struct {
	TPMKey    string // tls.key_tpm: path of the TPM key file on the laptop
	TPMDevice string // tls.tpm_device, "" for the default
	PKCS11    string // tls.key_pkcs11: the token key's URI
}

// IsZero reports whether r names no hardware key.
func (r KeyRef) IsZero() bool { return r.TPMKey == "" && r.PKCS11 == "" }

// BundleWith is Bundle for a device whose key is in hardware when key is
// set: the profile carries the CA, the certificate and the key's
// reference, and no key. Such a device was enrolled from a CSR; a device
// whose key the CA made is refused (its key is a file, not hardware).
func (p *PKI) BundleWith(device, server, serverName string, key KeyRef) ([]byte, error) {
	if key.TPMKey != "" && key.PKCS11 != "" {
		return nil, errors.New("name the key in the TPM or in a token, not both")
	}
	if err := ValidName("device", device); err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(server)
	if err != nil {
		if strings.Contains(err.Error(), "missing port") {
			host, port = strings.Trim(server, "[]"), "443"
		} else {
			return nil, fmt.Errorf("--server %q: want HOST:PORT: %w", server, err)
		}
	}
	if host == "" {
		return nil, fmt.Errorf("--server %q has no host", server)
	}
	if serverName == "" {
		serverName = host
	}
	recs, err := p.records(KindDevice, device)
	if err != nil {
		return nil, err
	}
	var rec *Record
	now := p.now()
	for i := range recs {
		r := &recs[i]
		if !r.Revoked() && now.Before(r.NotAfter) {
			rec = r
		}
	}
	if rec == nil {
		return nil, fmt.Errorf("device %q has no valid certificate in %s (issue one: sallyport pki issue --device %s)", device, p.Dir, device)
	}
	if rec.FromCSR && key.IsZero() {
		return nil, fmt.Errorf("device %q was signed from a CSR; its key stays on the device, so no bundle with an inline key can be made (for a key in the laptop's TPM or token: --key-tpm PATH or --key-pkcs11 URI)", device)
	}
	if !rec.FromCSR && !key.IsZero() {
		return nil, fmt.Errorf("device %q has a key this CA made (a file, not hardware): a hardware-key profile needs a certificate signed from the device's CSR (sallyport pki csr --tpm / --pkcs11 on the laptop, then pki sign)", device)
	}
	ca, err := os.ReadFile(p.Path("ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	cert, err := os.ReadFile(p.DeviceCertPath(device))
	if err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	var keyPEM []byte
	if key.IsZero() {
		if keyPEM, err = os.ReadFile(p.DeviceKeyPath(device)); err != nil {
			return nil, fmt.Errorf("%w", err)
		}
	}
	certs, err := pki.ParseCertificatesPEM(cert)
	if err != nil || pki.FormatSerial(certs[0].SerialNumber) != rec.Serial {
		return nil, fmt.Errorf("%s does not hold the certificate with serial %s", p.DeviceCertPath(device), rec.Serial)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# sallyport client config for device %q (serial %s, valid until %s).\n", device, rec.Serial, rec.NotAfter.Format(time.RFC3339))
	switch {
	case key.TPMKey != "":
		b.WriteString("# Holds no private key: the device key lives in the laptop's TPM (key_tpm).\n")
	case key.PKCS11 != "":
		b.WriteString("# Holds no private key: the device key lives in a PKCS#11 token (key_pkcs11).\n")
	default:
		b.WriteString("# Contains the device's private key: keep it mode 0600.\n")
	}
	b.WriteString("# Use: install it as /etc/sallyport/NAME.toml (mode 0600), then: sudo sallyport up NAME\n")
	b.WriteString("# (or: sudo systemctl enable --now sallyport-client@NAME; or: sallyport up -c THIS_FILE)\n\n")
	fmt.Fprintf(&b, "server = %s\n", tomlString(net.JoinHostPort(host, port)))
	fmt.Fprintf(&b, "server_name = %s\n\n", tomlString(serverName))
	b.WriteString("[tls]\n")
	fmt.Fprintf(&b, "ca_pem = \"\"\"\n%s\"\"\"\n", pemText(ca))
	fmt.Fprintf(&b, "cert_pem = \"\"\"\n%s\"\"\"\n", pemText(cert))
	switch {
	case key.TPMKey != "":
		fmt.Fprintf(&b, "key_tpm = %s\n", tomlString(key.TPMKey))
		if key.TPMDevice != "" {
			fmt.Fprintf(&b, "tpm_device = %s\n", tomlString(key.TPMDevice))
		}
		b.WriteString("\n")
	case key.PKCS11 != "":
		fmt.Fprintf(&b, "key_pkcs11 = %s\n\n", tomlString(key.PKCS11))
	default:
		fmt.Fprintf(&b, "key_pem = \"\"\"\n%s\"\"\"\n\n", pemText(keyPEM))
	}
	// No device: the client takes the first free spN, so profiles from
	// several gateways can be up on one laptop at once.
	b.WriteString("[tunnel]\n# device: left out, so the client takes the first free spN.\ndriver = \"wireguard\"\n")
	return []byte(b.String()), nil
}

// pemText makes PEM safe inside a TOML multi-line basic string (PEM has no
// quotes or backslashes; strip CRs and make sure it ends in a newline).
func pemText(b []byte) string {
	s := strings.ReplaceAll(string(b), "\r", "")
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `"`, `\"`)
	if !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	return s
}

func tomlString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}
