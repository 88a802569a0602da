package pkicmd

import (
	"flag"
	"fmt"
	"io"

	"github.com/sallyport/sallyport/pki/ca"
)

func init() {
	register(&command{
		name:    "init",
		summary: "create the CA (root, optionally an issuing intermediate)",
		usage:   "[--name NAME] [--org ORG] [--key ecdsa|ed25519|rsa3072] [--intermediate] [--days N]",
		help: `Create a new CA in --dir: root certificate and key, the trust bundle ca.crt,
an empty index and CRL. With --intermediate the root also signs an issuing
intermediate, and every later certificate and CRL is signed by it (the root
key can then be moved offline). Refuses to overwrite an existing CA.

Made inside a directory of the group sallyport (the package's
/etc/sallyport), the PKI shares with that group exactly what the packaged
gateway reads: the directory and servers/ are 0750 root:sallyport, the
certificates and the CRL 0644, and gateway keys written later 0640
root:sallyport. The CA keys, the index and devices/ stay owner-only (0600,
0700). Made anywhere else, everything is owner-only.`,
		example: `  sallyport pki init --name "Acme Device CA" --intermediate --dir /etc/sallyport/pki`,
		flags: func(fs *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			name := fs.String("name", "sallyport Device CA", "root CA common name")
			org := fs.String("org", "", "organization (subject O) of the CA certificates")
			key := fs.String("key", "ecdsa", "CA key type: ecdsa (P-256), ed25519 or rsa3072")
			inter := fs.Bool("intermediate", false, "also create an issuing intermediate CA signed by the root")
			days := fs.Int("days", ca.DefaultRootDays, "root CA lifetime in days")
			return func(pos []string, stdout, stderr io.Writer) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				kt, err := ca.ParseKeyType(*key)
				if err != nil {
					return usagef("%v", err)
				}
				p := ca.New(dirOf(fs))
				if err := p.Init(ca.InitOptions{Name: *name, Org: *org, Key: kt, Intermediate: *inter, Days: *days}); err != nil {
					return err
				}
				fmt.Fprintf(stdout, "created CA %q in %s (%s key)\n", *name, p.Dir, kt)
				fmt.Fprintf(stdout, "  trust bundle: %s\n", p.Path("ca.crt"))
				fmt.Fprintf(stdout, "  root key:     %s (keep it secret; mode 0600)\n", p.Path("root.key"))
				if *inter {
					fmt.Fprintf(stdout, "  issuing CA:   %s\n", p.Path("intermediate.crt"))
				}
				fmt.Fprintf(stdout, "  CRL:          %s\n", p.Path("crl.pem"))
				if g := p.Shared(); g != "" {
					fmt.Fprintf(stdout, "  shared with group %s (the gateway's): %s, ca.crt, crl.pem and servers/ are readable by it; the CA keys and devices/ are not\n", g, p.Dir)
				}
				return nil
			}
		},
	})
}
