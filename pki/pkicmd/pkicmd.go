// Package pkicmd implements the "sallyport pki" command line: one file per
// subcommand, each declaring its flags on a flag.FlagSet that cobra parses
// (NewCommand) and writing to injected writers, so every command runs in
// tests without a terminal.
package pkicmd

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/sallyport/sallyport/internal/cmdutil"
)

// command is one "sallyport pki" subcommand.
type command struct {
	name    string
	summary string
	usage   string // synopsis after "sallyport pki NAME"
	help    string // longer description
	example string
	flags   func(fs *flag.FlagSet) func(pos []string, stdout, stderr io.Writer) error
}

var commands = map[string]*command{}

func register(c *command) { commands[c.name] = c }

// usagef reports a wrong command line (exit 2, with a pointer to --help).
func usagef(format string, args ...any) error { return cmdutil.Usagef(format, args...) }

// exitError ends a command with a chosen exit code and no further message.
type exitError = cmdutil.ExitError

const topHelp = `Usage: sallyport pki COMMAND [flags]

Run a small device certificate authority for a sallyport gateway: issue and
revoke device certificates, sign CSRs, keep the CRL, and inspect certificates.
Every command takes --dir DIR (default ./pki), the PKI directory.

Commands:
%s
Run "sallyport pki COMMAND --help" for a command's flags and an example.

Example (a new gateway and a first laptop):
  sallyport pki init --name "Acme Device CA" --intermediate
  sallyport pki server --name vpn.acme.example --ip 203.0.113.1
  sallyport pki issue --device alice-laptop --user alice --group eng
  sallyport pki bundle --device alice-laptop --server vpn.acme.example:443 -o alice.toml
  sallyport pki revoke --device alice-laptop --reason keyCompromise
  sallyport pki issuer    # devices renew themselves from then on (docs/renewal.md)
`

var order = []string{"init", "server", "issue", "csr", "sign", "revoke", "crl", "list", "show", "bundle", "issuer", "rotate"}

// NewCommand returns the "pki" command with one subcommand per file of this
// package, parsed by cobra like every other sallyport command: flags before
// or after arguments ("--" ends them), --help and -h exit 0, usage errors 2.
func NewCommand() *cobra.Command {
	var b strings.Builder
	for _, n := range order {
		fmt.Fprintf(&b, "  %-8s %s\n", n, commands[n].summary)
	}
	top := strings.SplitN(fmt.Sprintf(topHelp, b.String()), "\nExample", 2)
	root := &cobra.Command{
		Use:     "pki COMMAND",
		Short:   "run the device certificate authority",
		Long:    strings.TrimSpace(strings.TrimPrefix(top[0], "Usage: sallyport pki COMMAND [flags]\n")),
		Example: strings.TrimRight(strings.TrimPrefix(top[1], " (a new gateway and a first laptop):\n"), "\n"),
		Args:    cobra.ArbitraryArgs,
		RunE:    cmdutil.NeedSubcommand,
	}
	for _, n := range order {
		root.AddCommand(commands[n].cobra())
	}
	root.AddCommand(&cobra.Command{
		Use:    "help [COMMAND]",
		Short:  "help about a pki command",
		Hidden: true, // like cobra's own help command: not a man page of its own
		Args:   cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := root
			if len(args) == 1 {
				c, _, err := root.Find(args)
				if err != nil || c == root {
					return usagef("unknown command %q", args[0])
				}
				target = c
			}
			target.SetOut(cmd.OutOrStdout())
			return target.Help()
		},
	})
	return root
}

// cobra turns c into a cobra command over its flag.FlagSet.
func (c *command) cobra() *cobra.Command {
	fs, run := c.newFlagSet()
	cc := &cobra.Command{
		Use:     c.name + " " + c.usage,
		Short:   c.summary,
		Long:    strings.TrimSpace(c.help),
		Example: strings.TrimRight(c.example, "\n"),
		Args:    cobra.ArbitraryArgs, // each command checks its own
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(args, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmdutil.AddGoFlags(cc, fs)
	addCompletions(cc, c.name)
	return cc
}

// Run executes "sallyport pki ARGS..." and returns the process exit code:
// 0 success, 1 failure (including a failed "show" check), 2 bad usage.
func Run(args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{Use: "sallyport", Args: cmdutil.NoArgs, RunE: cmdutil.NeedSubcommand}
	root.AddCommand(NewCommand())
	return cmdutil.Execute(root, append([]string{"pki"}, args...), stdout, stderr)
}

func (c *command) newFlagSet() (*flag.FlagSet, func(pos []string, stdout, stderr io.Writer) error) {
	fs := flag.NewFlagSet("sallyport pki "+c.name, flag.ContinueOnError)
	fs.String("dir", "./pki", "PKI directory")
	run := c.flags(fs)
	return fs, run
}

func dirOf(fs *flag.FlagSet) string { return fs.Lookup("dir").Value.String() }

// listFlag collects a repeatable flag; commas also separate values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

// Type is what --help shows for the value (cobra asks; without it, the Go
// type's name would show).
func (l *listFlag) Type() string { return "strings" }
func (l *listFlag) Set(s string) error {
	for _, v := range strings.Split(s, ",") {
		v = strings.TrimSpace(v)
		if v == "" {
			return errors.New("empty value")
		}
		*l = append(*l, v)
	}
	return nil
}

// timeFlag takes an RFC 3339 time or a YYYY-MM-DD date (UTC midnight).
type timeFlag struct{ t time.Time }

func (f *timeFlag) String() string {
	if f.t.IsZero() {
		return ""
	}
	return f.t.Format(time.RFC3339)
}

// Type is what --help shows for the value.
func (f *timeFlag) Type() string { return "time" }

func (f *timeFlag) Set(s string) error {
	for _, layout := range []string{time.RFC3339, "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			f.t = t
			return nil
		}
	}
	return fmt.Errorf("want an RFC 3339 time like 2025-01-31T12:00:00Z or a date like 2025-01-31, got %q", s)
}

func parseIPs(l []string) ([]net.IP, error) {
	var ips []net.IP
	for _, s := range l {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, usagef("--ip %q is not an IP address", s)
		}
		ips = append(ips, ip)
	}
	return ips, nil
}

func noArgs(pos []string) error {
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	return nil
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
