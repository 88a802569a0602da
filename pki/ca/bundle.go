package ca

import (
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
	if rec.FromCSR {
		return nil, fmt.Errorf("device %q was signed from a CSR; its key stays on the device, so no bundle with an inline key can be made", device)
	}
	ca, err := os.ReadFile(p.Path("ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	cert, err := os.ReadFile(p.DeviceCertPath(device))
	if err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	key, err := os.ReadFile(p.DeviceKeyPath(device))
	if err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	certs, err := pki.ParseCertificatesPEM(cert)
	if err != nil || pki.FormatSerial(certs[0].SerialNumber) != rec.Serial {
		return nil, fmt.Errorf("%s does not hold the certificate with serial %s", p.DeviceCertPath(device), rec.Serial)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# sallyport client config for device %q (serial %s, valid until %s).\n", device, rec.Serial, rec.NotAfter.Format(time.RFC3339))
	b.WriteString("# Contains the device's private key: keep it mode 0600.\n")
	b.WriteString("# Use: sallyport up -c THIS_FILE\n\n")
	fmt.Fprintf(&b, "server = %s\n", tomlString(net.JoinHostPort(host, port)))
	fmt.Fprintf(&b, "server_name = %s\n\n", tomlString(serverName))
	b.WriteString("[tls]\n")
	fmt.Fprintf(&b, "ca_pem = \"\"\"\n%s\"\"\"\n", pemText(ca))
	fmt.Fprintf(&b, "cert_pem = \"\"\"\n%s\"\"\"\n", pemText(cert))
	fmt.Fprintf(&b, "key_pem = \"\"\"\n%s\"\"\"\n\n", pemText(key))
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
