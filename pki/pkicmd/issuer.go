package pkicmd

import (
	"flag"
	"fmt"
	"io"

	"github.com/sallyport/sallyport/pki/ca"
)

func init() {
	register(&command{
		name:    "issuer",
		summary: "make the online issuer gateways renew devices with",
		usage:   "[--name NAME] [--days N] [--key TYPE]",
		help: `Make the online issuer: a CA signed by the root, with path length 0 (it can
certify no other CA) and clientAuth as its only extended key usage (nothing
it signs is accepted as a gateway), and its own lifetime (--days, default
365, never past the root). Writes renewal-issuer.crt and renewal-issuer.key
(mode 0600; 0640 group sallyport in a PKI shared with the gateway). Copy
both to each gateway and name them in server.toml, [renewal] issuer_cert
and issuer_key: devices then renew themselves inside their sessions, and
"pki issue" gives new devices 7 days by default. Needs the root key once;
keep it offline after. Running it again replaces the issuer (certificates
it issued stay valid until they expire). See docs/renewal.md.`,
		example: `  sallyport pki issuer --dir /etc/sallyport/pki
  scp /etc/sallyport/pki/renewal-issuer.{crt,key} gw1:/etc/sallyport/`,
		flags: func(fs *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			name := fs.String("name", "", "issuer common name (default: the root's name + \" Online Issuer\")")
			days := fs.Int("days", ca.DefaultIssuerDays, "lifetime in days (never past the root's)")
			key := fs.String("key", "ecdsa", "key type: ecdsa (P-256), ed25519 or rsa3072")
			return func(pos []string, stdout, stderr io.Writer) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				kt, err := ca.ParseKeyType(*key)
				if err != nil {
					return usagef("%v", err)
				}
				p := ca.New(dirOf(fs))
				is, replaced, err := p.MakeIssuer(ca.IssuerOptions{Name: *name, Days: *days, Key: kt})
				if err != nil {
					return err
				}
				if replaced != "" {
					fmt.Fprintf(stderr, "note: replaced the online issuer with serial %s; the certificates it issued stay valid until they expire\n", replaced)
				}
				fmt.Fprintf(stdout, "made the online issuer %q (serial %s), valid until %s\n", is.Cert.Subject.CommonName, is.Record.Serial, fmtTime(is.Cert.NotAfter))
				fmt.Fprintf(stdout, "certificate: %s\n", is.CertPath)
				group := "mode 0600"
				if is.KeyGroup != "" {
					group = "mode 0640, group " + is.KeyGroup
				}
				fmt.Fprintf(stdout, "key: %s (%s; the gateways hold it)\n", is.KeyPath, group)
				fmt.Fprintf(stdout, "next: copy both to each gateway and set in server.toml:\n  [renewal]\n  issuer_cert = %q\n  issuer_key = %q\n", is.CertPath, is.KeyPath)
				return nil
			}
		},
	})
}
