// Package cli is sallyport's command tree (spf13/cobra): the gateway
// (`server` and its admin commands), the laptop (`up`, `status`, `down`),
// the device PKI (`pki`, from pki/pkicmd), `version` and shell completion.
// It parses flags, loads configuration and handles signals; the work is done
// in the server, client and pki packages. cmd/sallyport only calls Main.
package cli

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/sallyport/sallyport/internal/cmdutil"
	"github.com/sallyport/sallyport/pki/pkicmd"
	"github.com/sallyport/sallyport/server/metrics"
)

// Main runs the sallyport command line with args (without the program
// name) and returns the exit code: 0 ok, 1 failure, 2 bad usage.
func Main(version string, args []string, stdout, stderr io.Writer) int {
	metrics.Version = version
	return cmdutil.Execute(NewRoot(version), args, stdout, stderr)
}

// NewRoot builds the whole command tree; version is what `version`,
// `--version` and `-v` print.
func NewRoot(version string) *cobra.Command {
	root := &cobra.Command{
		Use:   "sallyport",
		Short: "a remote-access VPN over mutual TLS",
		Long: `sallyport — a remote-access VPN over mutual TLS.

Laptops connect to a gateway over TLS 1.3 with a device certificate; the
gateway maps the certificate to a policy, assigns a tunnel address and relays
IP packets between a TUN device on each side.`,
		Example: `  sallyport server -c /etc/sallyport/server.toml
  sudo sallyport up acme            # the profile /etc/sallyport/acme.toml
  sallyport pki --help`,
		Version:           version,
		Args:              cmdutil.NoArgs,
		RunE:              cmdutil.NeedSubcommand,
		CompletionOptions: cobra.CompletionOptions{HiddenDefaultCmd: false},
	}
	root.SetVersionTemplate("sallyport {{.Version}}\n")
	root.AddGroup(&cobra.Group{ID: "gw", Title: "Gateway:"}, &cobra.Group{ID: "laptop", Title: "Laptop:"}, &cobra.Group{ID: "other", Title: "Other:"})
	root.SetHelpCommandGroupID("other")
	root.SetCompletionCommandGroupID("other")

	srv := serverCmd()
	srv.GroupID = "gw"
	root.AddCommand(srv)
	for _, c := range []*cobra.Command{upCmd(), statusCmd(), downCmd()} {
		c.GroupID = "laptop"
		root.AddCommand(c)
	}
	pol := policyCmd()
	pol.GroupID = "gw"
	root.AddCommand(pol)
	pk := pkicmd.NewCommand()
	pk.GroupID = "gw"
	root.AddCommand(pk)
	root.AddCommand(&cobra.Command{
		Use:     "version",
		Short:   "print the version",
		GroupID: "other",
		Args:    cmdutil.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			cmd.Println("sallyport", version)
		},
	})
	addCompletions(root)
	return root
}
