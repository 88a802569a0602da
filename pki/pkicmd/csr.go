package pkicmd

import (
	"flag"
	"fmt"
	"io"

	"github.com/sallyport/sallyport/pki/ca"
)

func init() {
	register(&command{
		name:    "csr",
		summary: "on a laptop: make a device key and a signing request",
		usage:   "--device NAME [--key TYPE]",
		help: `Run on the device itself. Makes a private key that never leaves the machine
(DIR/devices/NAME.key, mode 0600) and a certificate signing request
(DIR/devices/NAME.csr) to hand to the admin, who runs "sallyport pki sign".
The CSR only carries the key and the name; the admin decides everything
else.`,
		example: `  sallyport pki csr --device alice-laptop --dir ~/.config/sallyport
  # send ~/.config/sallyport/devices/alice-laptop.csr to the admin`,
		flags: func(fs *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			device := fs.String("device", "", "device name (required)")
			key := fs.String("key", "ecdsa", "key type: ecdsa (P-256), ed25519 or rsa3072")
			return func(pos []string, stdout, stderr io.Writer) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				if *device == "" {
					return usagef("--device is required")
				}
				kt, err := ca.ParseKeyType(*key)
				if err != nil {
					return usagef("%v", err)
				}
				csr, key, err := ca.MakeCSR(dirOf(fs), *device, kt)
				if err != nil {
					return err
				}
				fmt.Fprintf(stdout, "key: %s (stays on this device)\ncsr: %s (send this to the admin)\n", key, csr)
				return nil
			}
		},
	})
}
