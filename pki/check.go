package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"
)

// Check levels.
const (
	LevelOK   = "ok"
	LevelWarn = "warn"
	LevelFail = "FAIL"
)

// Finding is the result of one check on a certificate.
type Finding struct {
	Level string // LevelOK, LevelWarn or LevelFail
	Check string // short name: validity, chain, eku, key, ca, revocation, signature
	Msg   string
}

// CheckOptions configures CheckChain.
type CheckOptions struct {
	Roots         []*x509.Certificate // trusted roots (the PKI's root.crt)
	Intermediates []*x509.Certificate // extra intermediates besides the file's own
	CRL           *RevocationList     // optional
	Role          string              // "device", "server" or "" (guess from EKU)
	Now           time.Time           // zero means time.Now()
	SoonDays      int                 // warn when fewer days are left (default 30)
}

// Failed reports whether any finding is a failure.
func Failed(fs []Finding) bool {
	return slices.ContainsFunc(fs, func(f Finding) bool { return f.Level == LevelFail })
}

// CheckChain checks certs[0] as a leaf (the rest of certs help build its
// chain) the way an SSL checker would: validity, chain to a trusted root,
// EKU for its role, key strength, signature algorithm, CA flag, revocation.
func CheckChain(certs []*x509.Certificate, o CheckOptions) []Finding {
	var fs []Finding
	add := func(level, check, format string, args ...any) {
		fs = append(fs, Finding{level, check, fmt.Sprintf(format, args...)})
	}
	if len(certs) == 0 {
		add(LevelFail, "input", "no certificate")
		return fs
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	soon := o.SoonDays
	if soon <= 0 {
		soon = 30
	}
	leaf := certs[0]
	// Validity of every certificate in the file.
	for i, c := range certs {
		who := "certificate"
		if i > 0 {
			who = fmt.Sprintf("chain certificate %d (%s)", i, c.Subject.CommonName)
		}
		switch {
		case now.Before(c.NotBefore):
			add(LevelFail, "validity", "%s is not valid yet: starts %s", who, c.NotBefore.UTC().Format(time.RFC3339))
		case now.After(c.NotAfter):
			add(LevelFail, "validity", "%s expired %s", who, c.NotAfter.UTC().Format(time.RFC3339))
		case c.NotAfter.Sub(now) < time.Duration(soon)*24*time.Hour:
			add(LevelWarn, "validity", "%s expires soon: %s (%d days left)", who, c.NotAfter.UTC().Format(time.RFC3339), int(c.NotAfter.Sub(now).Hours()/24))
		case i == 0:
			add(LevelOK, "validity", "valid until %s (%d days left)", c.NotAfter.UTC().Format(time.RFC3339), int(c.NotAfter.Sub(now).Hours()/24))
		}
	}
	// Chain: a full x509 verification at now when the leaf is in its
	// validity; otherwise (already reported above) a time-independent walk of
	// signatures, so an expired leaf is still checked for its issuer.
	if len(o.Roots) == 0 {
		add(LevelWarn, "chain", "no trusted root given (no PKI directory); chain not checked")
	} else if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		if names, err := walkChain(leaf, append(slices.Clone(certs[1:]), o.Intermediates...), o.Roots); err != nil {
			add(LevelFail, "chain", "does not chain to this PKI's root: %v", err)
		} else {
			add(LevelOK, "chain", "signed by this PKI: %s", strings.Join(names, " -> "))
		}
	} else {
		opts := x509.VerifyOptions{
			Roots:         NewPool(o.Roots),
			Intermediates: NewPool(append(slices.Clone(certs[1:]), o.Intermediates...)),
			CurrentTime:   now,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		}
		if chains, err := leaf.Verify(opts); err != nil {
			add(LevelFail, "chain", "does not chain to this PKI's root: %v", err)
		} else {
			var names []string
			for _, c := range chains[0] {
				names = append(names, c.Subject.CommonName)
			}
			add(LevelOK, "chain", "chains to this PKI's root: %s", strings.Join(names, " -> "))
		}
	}
	// Role and EKU.
	role := o.Role
	client := slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	server := slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	any := slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny)
	if role == "" && !leaf.IsCA {
		switch {
		case server && !client:
			role = KindServer
		case client && !server:
			role = KindDevice
		}
	}
	switch {
	case leaf.IsCA && (o.Role != "" || client || server):
		add(LevelFail, "ca", "leaf certificate (%s) is marked as a CA", ekuNames(leaf))
	case leaf.IsCA:
		if leaf.CheckSignatureFrom(leaf) == nil {
			add(LevelOK, "ca", "root CA certificate")
		} else {
			add(LevelOK, "ca", "intermediate CA certificate")
		}
	case any:
		add(LevelFail, "eku", "extended key usage anyExtendedKeyUsage is too broad for a leaf")
	case role == KindDevice && (!client || server || len(leaf.ExtKeyUsage) != 1):
		add(LevelFail, "eku", "a device certificate must have exactly the clientAuth extended key usage (has %s)", ekuNames(leaf))
	case role == KindServer && !server:
		add(LevelFail, "eku", "a server certificate needs the serverAuth extended key usage (has %s)", ekuNames(leaf))
	case role == "":
		add(LevelFail, "eku", "neither a device (clientAuth only) nor a server (serverAuth) certificate: EKU %s", ekuNames(leaf))
	default:
		add(LevelOK, "eku", "%s certificate: %s", role, ekuNames(leaf))
	}
	if role == KindServer && len(leaf.DNSNames) == 0 && len(leaf.IPAddresses) == 0 {
		add(LevelFail, "san", "server certificate has no DNS or IP subject alternative name")
	}
	// Key strength.
	switch k := leaf.PublicKey.(type) {
	case *rsa.PublicKey:
		if b := k.N.BitLen(); b < 2048 {
			add(LevelFail, "key", "RSA %d bits is too weak (want >= 2048)", b)
		} else {
			add(LevelOK, "key", "RSA %d bits", b)
		}
	case *ecdsa.PublicKey:
		if b := k.Curve.Params().BitSize; b < 256 {
			add(LevelFail, "key", "ECDSA %d bits is too weak", b)
		} else {
			add(LevelOK, "key", "ECDSA %s", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
		add(LevelOK, "key", "Ed25519")
	default:
		add(LevelFail, "key", "unsupported public key type %T", k)
	}
	switch leaf.SignatureAlgorithm {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1, x509.DSAWithSHA256:
		add(LevelFail, "signature", "weak signature algorithm %s", leaf.SignatureAlgorithm)
	}
	if o.CRL != nil {
		if ok, reason := o.CRL.Revoked(leaf); ok {
			add(LevelFail, "revocation", "revoked (%s)", reason)
		} else {
			add(LevelOK, "revocation", "not revoked")
		}
		if nu := o.CRL.NextUpdate(); !nu.IsZero() && now.After(nu) {
			add(LevelWarn, "revocation", "CRL is stale since %s (run: sallyport pki crl)", nu.UTC().Format(time.RFC3339))
		}
	}
	return fs
}

func ekuNames(c *x509.Certificate) string {
	var s []string
	for _, e := range c.ExtKeyUsage {
		switch e {
		case x509.ExtKeyUsageClientAuth:
			s = append(s, "clientAuth")
		case x509.ExtKeyUsageServerAuth:
			s = append(s, "serverAuth")
		case x509.ExtKeyUsageAny:
			s = append(s, "any")
		default:
			s = append(s, fmt.Sprintf("eku(%d)", e))
		}
	}
	for _, o := range c.UnknownExtKeyUsage {
		s = append(s, o.String())
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

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
	recs, err := p.List()
	if err != nil {
		return nil, err
	}
	var rec *Record
	now := p.now()
	for i := range recs {
		r := &recs[i]
		if r.Kind == KindDevice && r.Name == device && !r.Revoked() && now.Before(r.NotAfter) {
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
	certs, err := ParseCertificatesPEM(cert)
	if err != nil || FormatSerial(certs[0].SerialNumber) != rec.Serial {
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
	b.WriteString("[tunnel]\ndevice = \"sp0\"\ndriver = \"wireguard\"\n")
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

// walkChain follows issuer signatures from leaf through intermediates to one
// of roots, ignoring validity periods.
func walkChain(leaf *x509.Certificate, intermediates, roots []*x509.Certificate) ([]string, error) {
	names := []string{leaf.Subject.CommonName}
	cur := leaf
	for depth := 0; depth < 8; depth++ {
		for _, r := range roots {
			if bytes.Equal(cur.RawIssuer, r.RawSubject) && cur.CheckSignatureFrom(r) == nil {
				return append(names, r.Subject.CommonName), nil
			}
		}
		var next *x509.Certificate
		for _, c := range intermediates {
			if c != cur && bytes.Equal(cur.RawIssuer, c.RawSubject) && cur.CheckSignatureFrom(c) == nil {
				next = c
				break
			}
		}
		if next == nil {
			return nil, fmt.Errorf("no trusted issuer %q found for %q", cur.Issuer, cur.Subject)
		}
		names = append(names, next.Subject.CommonName)
		cur = next
	}
	return nil, errors.New("chain too long")
}
