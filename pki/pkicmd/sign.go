package pkicmd

import (
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/ca"
)

func init() {
	register(&command{
		name:    "sign",
		summary: "sign a device's CSR (the signer decides every extension)",
		usage:   "--csr FILE --device NAME [--override-cn] [--user USER] [--group G]... [--key-origin tpm|pkcs11] [--days N] [-o FILE]",
		help: `Issue a device certificate named NAME for the key in a CSR made by
"sallyport pki csr" (or openssl). The CSR must carry exactly one CN, and it
must be NAME: a CSR with no CN or with several is refused, and so is one
whose CN names another device, unless --override-cn says to issue it as NAME
anyway. Only the CSR's public key is used; any extensions or subject fields
it asks for (CA, serverAuth, SANs, OU...) are ignored: the certificate gets
exactly what an "issue" would give. Writes devices/NAME.crt (and -o FILE if
given) and prints serial and fingerprint.

--key-origin tpm|pkcs11 records in the certificate (as a certificate
policy) that you, the issuer, vouch that the CSR's key was made inside the
device's TPM or a PKCS#11 token and cannot leave it: say it only when you
know how the device was enrolled (you or your fleet tooling ran "sallyport
pki csr --tpm" on it). A gateway policy with require_hardware_key = true
admits only certificates that carry it. Nothing in the CSR can set it, and
sallyport does not verify TPM key attestation.`,
		example: `  sallyport pki sign --csr alice-laptop.csr --device alice-laptop --user alice --group eng -o alice-laptop.crt`,
		flags: func(fs *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			csrPath := fs.String("csr", "", "CSR file, PEM (required)")
			device := fs.String("device", "", "device name; the CSR's CN must be the same (required)")
			overrideCN := fs.Bool("override-cn", false, "issue as --device even though the CSR's CN is another name")
			keyOrigin := fs.String("key-origin", "", "vouch that the key was made in the device's hardware: tpm or pkcs11 (recorded in the certificate)")
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
				if *device == "" {
					return usagef("--device is required: name the device; the CSR's CN must match it")
				}
				data, err := pki.ReadPEMFile(*csrPath)
				if err != nil {
					return fmt.Errorf("read CSR: %w", err)
				}
				o := validity()
				if *keyOrigin != "" {
					if _, err := pki.KeyOriginPolicy(*keyOrigin); err != nil {
						return usagef("--key-origin: %v", err)
					}
				}
				o.Name, o.User, o.Groups, o.OverrideCN, o.KeyOrigin = *device, *user, groups, *overrideCN, *keyOrigin
				is, err := ca.New(dirOf(fs)).SignCSR(data, o)
				if err != nil {
					return err
				}
				if *out != "" {
					chain, err := os.ReadFile(is.CertPath)
					if err != nil {
						return err
					}
					if err := atomicfile.Write(*out, chain, 0o644); err != nil {
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
