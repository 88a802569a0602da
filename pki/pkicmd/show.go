package pkicmd

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"strings"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/ca"
)

func init() {
	register(&command{
		name:    "show",
		summary: "print a certificate or chain readably and check it",
		usage:   "FILE [--role device|server]",
		help: `Print each certificate in FILE (PEM; a chain is fine) and check the first
one: validity (expired, not yet valid, expiring within 30 days), chain to
the root of the PKI in --dir, EKU right for its role (device: clientAuth
only; server: serverAuth), key strength, signature algorithm, a leaf marked
as a CA, and revocation against the PKI's CRL. Exits 1 when a check fails
(warnings do not fail).`,
		example: `  sallyport pki show pki/devices/alice-laptop.crt
  sallyport pki show --role server /etc/sallyport/server.crt --dir /etc/sallyport/pki`,
		flags: func(fset *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			role := fset.String("role", "", "expected role: device or server (default: from the EKU)")
			return func(pos []string, stdout, stderr io.Writer) error {
				if len(pos) != 1 {
					return usagef("want exactly one FILE")
				}
				if *role != "" && *role != pki.KindDevice && *role != pki.KindServer {
					return usagef("--role must be device or server")
				}
				certs, err := pki.LoadCertificates(pos[0])
				if err != nil {
					return err
				}
				for i, c := range certs {
					if i > 0 {
						fmt.Fprintln(stdout)
					}
					describe(stdout, i, c)
				}
				o := pki.CheckOptions{Role: *role}
				p := ca.New(dirOf(fset))
				if roots, inter, err := p.Roots(); err == nil {
					o.Roots, o.Intermediates = roots, inter
					if crl, err := p.LoadRevocations(); err == nil {
						o.CRL = crl
					} else if !errors.Is(err, fs.ErrNotExist) {
						fmt.Fprintf(stderr, "warning: %v\n", err)
					}
				} else if !errors.Is(err, ca.ErrNoCA) {
					return err
				}
				findings := pki.CheckChain(certs, o)
				fmt.Fprintln(stdout, "\nChecks:")
				for _, f := range findings {
					fmt.Fprintf(stdout, "  %-4s  %-10s  %s\n", f.Level, f.Check, f.Msg)
				}
				if pki.Failed(findings) {
					fmt.Fprintln(stderr, "sallyport pki show: certificate check failed")
					return exitError{Code: 1}
				}
				return nil
			}
		},
	})
}

func describe(w io.Writer, i int, c *x509.Certificate) {
	id := pki.IdentityOf(c)
	title := "Certificate"
	if i > 0 {
		title = fmt.Sprintf("Chain certificate %d", i)
	}
	fmt.Fprintf(w, "%s:\n", title)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "  %-13s %s\n", k+":", v)
		}
	}
	row("Subject", id.Subject)
	row("Issuer", id.Issuer)
	if !c.IsCA {
		row("Device", id.Device)
		row("User", id.User)
		row("Groups", strings.Join(id.Groups, ", "))
	}
	row("Serial", id.Serial)
	row("SHA-256", id.Fingerprint)
	row("Not before", fmtTime(c.NotBefore))
	row("Not after", fmtTime(c.NotAfter))
	row("Key", keyDesc(c))
	switch id.KeyOrigin {
	case pki.KeyOriginTPM:
		if pki.KeyOriginAttested(c) {
			row("Key origin", "in the device's TPM (attested: EK certificate, AK certify, credential activation)")
		} else {
			row("Key origin", "in the device's TPM (vouched for by the issuer)")
		}
	case pki.KeyOriginPKCS11:
		row("Key origin", "in a PKCS#11 token (vouched for by the issuer)")
	}
	row("Signature", c.SignatureAlgorithm.String())
	if c.IsCA {
		row("CA", "yes")
	}
	var eku []string
	for _, e := range c.ExtKeyUsage {
		switch e {
		case x509.ExtKeyUsageClientAuth:
			eku = append(eku, "clientAuth")
		case x509.ExtKeyUsageServerAuth:
			eku = append(eku, "serverAuth")
		default:
			eku = append(eku, fmt.Sprint(e))
		}
	}
	row("EKU", strings.Join(eku, ", "))
	var sans []string
	sans = append(sans, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		sans = append(sans, ip.String())
	}
	sans = append(sans, id.Emails...)
	sans = append(sans, id.URIs...)
	row("SANs", strings.Join(sans, ", "))
}

func keyDesc(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return c.PublicKeyAlgorithm.String()
}
