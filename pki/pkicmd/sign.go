package pkicmd

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/sallyport/sallyport/pki/ca"
)

func init() {
	register(&command{
		name:    "sign",
		summary: "sign a device's CSR (the signer decides every extension)",
		usage:   "--csr FILE [--device NAME] [--user USER] [--group G]... [--days N] [-o FILE]",
		help: `Issue a device certificate for the key in a CSR made by "sallyport pki csr"
(or openssl). Only the CSR's public key and, unless --device is given, its
CN are used; any extensions it asks for (CA, serverAuth, SANs...) are
ignored: the certificate gets exactly what an "issue" would give. Writes
devices/NAME.crt (and -o FILE if given) and prints serial and fingerprint.`,
		example: `  sallyport pki sign --csr alice-laptop.csr --user alice --group eng -o alice-laptop.crt`,
		flags: func(fs *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			csrPath := fs.String("csr", "", "CSR file, PEM (required)")
			device := fs.String("device", "", "device name (default: the CSR's CN)")
			user := fs.String("user", "", "user the device belongs to (subject UID)")
			out := fs.String("o", "", "also write the certificate chain to this file")
			var groups listFlag
			fs.Var(&groups, "group", "group (subject OU); repeatable or comma-separated")
			validity := addValidityFlags(fs, ca.DefaultDeviceDays)
			return func(pos []string, stdout, stderr io.Writer) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				if *csrPath == "" {
					return usagef("--csr is required")
				}
				data, err := os.ReadFile(*csrPath)
				if err != nil {
					return fmt.Errorf("read CSR: %w", err)
				}
				o := validity()
				o.Name, o.User, o.Groups = *device, *user, groups
				is, err := ca.New(dirOf(fs)).SignCSR(data, o)
				if err != nil {
					return err
				}
				if *out != "" {
					chain, err := os.ReadFile(is.CertPath)
					if err != nil {
						return err
					}
					if err := ca.WriteFileAtomic(*out, chain, 0o644); err != nil {
						return err
					}
					fmt.Fprintf(stdout, "wrote %s\n", *out)
				}
				printIssued(stdout, stderr, "device", is)
				return nil
			}
		},
	})
}
