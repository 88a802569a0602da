package cli

import (
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sallyport/sallyport/client"
	"github.com/sallyport/sallyport/internal/adminsock"
	"github.com/sallyport/sallyport/server"
)

// Shell completion of values, beyond the command and flag names cobra
// completes by itself: the devices connected to the gateway (server kick,
// from server status), the laptop's profiles (client.Profiles: the
// NAME.toml files in /etc/sallyport or $CONFIGURATION_DIRECTORY, for
// up/status/down), the choices of enumerated flags. The pki commands
// complete devices, serials, reasons and key types from the CA index
// (pki/pkicmd/complete.go). A completion that cannot find its values (no
// gateway running, no permission) offers nothing, never an error.

// completionTimeout bounds the admin socket call behind a completion: a
// shell must not hang on a stuck gateway.
const completionTimeout = time.Second

// enumFlags are flags whose values are a fixed list, by flag name.
var enumFlags = map[string][]string{
	"log-format": {"text", "json"},
	"log-level":  {"debug", "info", "warn", "error"},
}

// addCompletions walks the command tree under root and registers the
// value completions.
func addCompletions(root *cobra.Command) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for name, values := range enumFlags {
			if c.Flags().Lookup(name) != nil {
				_ = c.RegisterFlagCompletionFunc(name, fixed(values))
			}
		}
		switch c.CommandPath() {
		case "sallyport server kick":
			c.ValidArgsFunction = sessionDevices
		case "sallyport server pprof":
			_ = c.RegisterFlagCompletionFunc("kind", fixed(server.ProfileKinds))
		case "sallyport up", "sallyport status", "sallyport down":
			if c.Flags().Lookup("config") != nil {
				_ = c.RegisterFlagCompletionFunc("config", profileFiles)
			}
			if strings.Contains(c.Use, "NAME") {
				c.ValidArgsFunction = profileNames
			}
		}
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
}

func fixed(values []string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return values, cobra.ShellCompDirectiveNoFileComp
	}
}

// profileNames completes the NAME of up/status/down NAME.
func profileNames(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return client.Profiles(), cobra.ShellCompDirectiveNoFileComp
}

// profileFiles completes -c with the profiles' paths, and files as well.
func profileFiles(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	var out []string
	for _, p := range client.Profiles() {
		out = append(out, filepath.Join(client.ConfigDir(), p+".toml"))
	}
	return out, cobra.ShellCompDirectiveDefault
}

// sessionDevices completes server kick's DEVICE with the devices that have
// a session on the gateway (its admin socket, as --socket/-c pick it).
func sessionDevices(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	f := adminFlags{isServer: true}
	if fl := cmd.Flags().Lookup("socket"); fl != nil {
		f.socket = fl.Value.String()
	}
	if fl := cmd.Flags().Lookup("config"); fl != nil {
		f.config = fl.Value.String()
	}
	sock, err := f.path()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var st server.Status
	if err := adminsock.CallTimeout(sock, adminsock.Request{Cmd: "status"}, &st, completionTimeout); err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, s := range st.Sessions {
		desc := s.Address
		if s.User != "" {
			desc = s.User + ", " + desc
		}
		out = append(out, s.Device+"\t"+desc)
	}
	sort.Strings(out)
	return out, cobra.ShellCompDirectiveNoFileComp
}
