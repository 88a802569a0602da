package cli

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sallyport/sallyport/internal/cmdutil"
	"github.com/sallyport/sallyport/server"
)

// serverPprofCmd is `sallyport server pprof`: a runtime profile of the
// running gateway, fetched through its admin socket, written to a file.
func serverPprofCmd() *cobra.Command {
	f := adminFlags{isServer: true}
	var kind, out string
	var seconds int
	cmd := &cobra.Command{
		Use:   "pprof -o FILE",
		Short: "fetch a Go runtime profile from the gateway",
		Long: `Fetches a Go runtime profile (pprof format) from the running gateway
through its admin socket and writes it to FILE, to read with
"go tool pprof FILE". Needs [admin] pprof = true in server.toml (off by default).`,
		Example: "  sallyport server pprof --kind heap -o gw-heap.pprof\n  sallyport server pprof --kind cpu --seconds 30 -o gw-cpu.pprof",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return cmdutil.Usagef("missing -o FILE")
			}
			sock, err := f.path()
			if err != nil {
				return err
			}
			data, err := server.FetchProfile(sock, kind, seconds)
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, data, 0o600); err != nil {
				return fmt.Errorf("write profile: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s profile to %s (%d bytes); read it with: go tool pprof %s\n", kind, out, len(data), out)
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&kind, "kind", "heap", "profile: "+strings.Join(server.ProfileKinds, "|"))
	cmd.Flags().IntVar(&seconds, "seconds", 30, fmt.Sprintf("how long to record a cpu profile (1-%d)", server.MaxProfileSeconds))
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write the profile to (mode 0600)")
	return cmd
}
