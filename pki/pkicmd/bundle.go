package pkicmd

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/pki/ca"
	"github.com/sallyport/sallyport/pki/hwkey"
)

func init() {
	register(&command{
		name:    "bundle",
		summary: "print a complete client.toml with CA, cert and key (or key reference)",
		usage:   "--device NAME --server HOST:PORT [--server-name NAME] [--key-tpm PATH [--tpm-device PATH] | --key-pkcs11 URI] [-o FILE]",
		help: `Print a ready client config for a device (server, server_name, and the
CA bundle, device certificate chain and key inline as ca_pem, cert_pem,
key_pem), so the laptop needs one file, installed as /etc/sallyport/NAME.toml
and brought up with "sallyport up NAME" (or "sallyport up -c FILE"). The output
contains the private key: with -o the file is written mode 0600. The device
must have a valid certificate issued with "issue" (not from a CSR).

For a device enrolled with a hardware key ("pki csr --tpm" or "--pkcs11" on
the laptop, then "pki sign"), name the key as the laptop sees it: the
profile then carries CA, certificate and that reference, and no key:
  --key-tpm PATH    the TPM key file on the laptop (key_tpm)
  --key-pkcs11 URI  the token's key, an RFC 7512 URI with module-path and
                    pin-source (key_pkcs11)
"pki csr" printed the line to use.`,
		example: `  sallyport pki bundle --device alice-laptop --server vpn.acme.example:443 -o alice-laptop.toml
  sallyport pki bundle --device bob-laptop --server vpn.acme.example:443 --key-tpm /etc/sallyport/devices/bob-laptop.tpmkey -o bob-laptop.toml`,
		flags: func(fs *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			device := fs.String("device", "", "device name (required)")
			server := fs.String("server", "", "gateway address HOST:PORT (required; port 443 if omitted)")
			serverName := fs.String("server-name", "", "name the gateway certificate must carry (default: HOST)")
			keyTPM := fs.String("key-tpm", "", "the device key is in the laptop's TPM: path of its TPM key file there")
			tpmDevice := fs.String("tpm-device", "", "the laptop's TPM, if not "+hwkey.DefaultTPMDevice)
			keyP11 := fs.String("key-pkcs11", "", "the device key is in a PKCS#11 token: its pkcs11: URI")
			out := fs.String("o", "", "write to FILE instead of standard output (mode 0600 when it holds the key)")
			return func(pos []string, stdout, stderr io.Writer) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				if *device == "" || *server == "" {
					return usagef("--device and --server are required")
				}
				ref := ca.KeyRef{TPMKey: *keyTPM, TPMDevice: *tpmDevice, PKCS11: *keyP11}
				switch {
				case *keyTPM != "" && *keyP11 != "":
					return usagef("--key-tpm and --key-pkcs11: the key is in one place")
				case *tpmDevice != "" && *keyTPM == "":
					return usagef("--tpm-device needs --key-tpm")
				case *keyTPM != "" && !filepath.IsAbs(*keyTPM):
					return usagef("--key-tpm %q: give the absolute path on the laptop", *keyTPM)
				case *keyP11 != "":
					if _, err := hwkey.ParsePKCS11URI(*keyP11); err != nil {
						return usagef("--key-pkcs11: %v", err)
					}
				}
				p := ca.New(dirOf(fs))
				data, err := p.BundleWith(*device, *server, *serverName, ref)
				if err != nil {
					return err
				}
				suggestShortLife(p, *device, stderr)
				if *out == "" {
					_, err := stdout.Write(data)
					return err
				}
				if err := atomicfile.Write(*out, data, 0o600); err != nil {
					return err
				}
				if ref.IsZero() {
					fmt.Fprintf(stderr, "wrote %s (mode 0600; it holds the device key)\n", *out)
				} else {
					fmt.Fprintf(stderr, "wrote %s (no key in it: the key stays in the laptop's hardware)\n", *out)
				}
				return nil
			}
		},
	})
}

// suggestShortLife notes, when the PKI has an online issuer, that a device
// certificate that lives longer than a month gives up what renewal is for:
// the device renews itself once connected, so its first certificate need
// only last until then (a lost bundle then soon stops working).
func suggestShortLife(p *ca.PKI, device string, stderr io.Writer) {
	if !p.HasRenewalIssuer() {
		return
	}
	recs, err := p.List()
	if err != nil {
		return
	}
	now := time.Now()
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		if r.Kind != ca.KindDevice || r.Name != device || r.Revoked() || now.After(r.NotAfter) {
			continue
		}
		if life := r.NotAfter.Sub(r.NotBefore); life > 30*24*time.Hour {
			fmt.Fprintf(stderr, "note: this device's certificate lives %d days, but with renewal (this PKI has an online issuer) it renews itself once connected: %d days is enough, and a lost bundle then soon stops working (revoke and issue it again with --days %d)\n",
				int(life.Hours()/24), ca.RenewedDeviceDays, ca.RenewedDeviceDays)
		}
		return
	}
}
