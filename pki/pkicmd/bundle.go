package pkicmd

import (
	"flag"
	"fmt"
	"io"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/pki/ca"
)

func init() {
	register(&command{
		name:    "bundle",
		summary: "print a complete client.toml with CA, cert and key inline",
		usage:   "--device NAME --server HOST:PORT [--server-name NAME] [-o FILE]",
		help: `Print a ready client config for a device (server, server_name, and the
CA bundle, device certificate chain and key inline as ca_pem, cert_pem,
key_pem), so the laptop needs one file: "sallyport up -c FILE". The output
contains the private key: with -o the file is written mode 0600. The device
must have a valid certificate issued with "issue" (not from a CSR).`,
		example: `  sallyport pki bundle --device alice-laptop --server vpn.acme.example:443 -o alice-laptop.toml`,
		flags: func(fs *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			device := fs.String("device", "", "device name (required)")
			server := fs.String("server", "", "gateway address HOST:PORT (required; port 443 if omitted)")
			serverName := fs.String("server-name", "", "name the gateway certificate must carry (default: HOST)")
			out := fs.String("o", "", "write to FILE (mode 0600) instead of standard output")
			return func(pos []string, stdout, stderr io.Writer) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				if *device == "" || *server == "" {
					return usagef("--device and --server are required")
				}
				data, err := ca.New(dirOf(fs)).Bundle(*device, *server, *serverName)
				if err != nil {
					return err
				}
				if *out == "" {
					_, err := stdout.Write(data)
					return err
				}
				if err := atomicfile.Write(*out, data, 0o600); err != nil {
					return err
				}
				fmt.Fprintf(stderr, "wrote %s (mode 0600; it holds the device key)\n", *out)
				return nil
			}
		},
	})
}
