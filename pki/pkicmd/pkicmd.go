// Package pkicmd implements the "sallyport pki" command line: one file per
// subcommand, each a flag.FlagSet writing to injected writers so every
// command runs in tests without a terminal.
package pkicmd

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
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

// usageError makes Run exit 2 and print the subcommand's usage.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// exitError carries a chosen exit code without an extra message.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

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
`

var order = []string{"init", "server", "issue", "csr", "sign", "revoke", "crl", "list", "show", "bundle"}

func printTop(w io.Writer) {
	var b strings.Builder
	for _, n := range order {
		fmt.Fprintf(&b, "  %-8s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, topHelp, b.String())
}

// Run executes "sallyport pki ARGS..." and returns the process exit code:
// 0 success, 1 failure (including a failed "show" check), 2 bad usage.
func Run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printTop(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if len(args) > 1 && args[0] == "help" {
			if c, ok := commands[args[1]]; ok {
				printHelp(c, stdout)
				return 0
			}
		}
		printTop(stdout)
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "sallyport pki: unknown command %q\n\n", args[0])
		printTop(stderr)
		return 2
	}
	return c.run(args[1:], stdout, stderr)
}

func (c *command) newFlagSet() (*flag.FlagSet, func(pos []string, stdout, stderr io.Writer) error) {
	fs := flag.NewFlagSet("sallyport pki "+c.name, flag.ContinueOnError)
	fs.String("dir", "./pki", "PKI directory")
	run := c.flags(fs)
	return fs, run
}

func printHelp(c *command, w io.Writer) {
	fs, _ := c.newFlagSet()
	fmt.Fprintf(w, "Usage: sallyport pki %s %s\n\n%s\n\nFlags:\n", c.name, c.usage, strings.TrimSpace(c.help))
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprintf(w, "\nExample:\n%s\n", strings.TrimRight(c.example, "\n"))
}

func (c *command) run(args []string, stdout, stderr io.Writer) int {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			printHelp(c, stdout)
			return 0
		}
	}
	fs, run := c.newFlagSet()
	fs.SetOutput(io.Discard)
	pos, err := parseInterspersed(fs, args)
	if err == nil {
		err = run(pos, stdout, stderr)
	}
	if err == nil {
		return 0
	}
	var ue usageError
	var ee exitError
	switch {
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "sallyport pki %s: %v\nRun \"sallyport pki %s --help\" for usage.\n", c.name, err, c.name)
		return 2
	}
	fmt.Fprintf(stderr, "sallyport pki %s: %v\n", c.name, err)
	return 1
}

// parseInterspersed parses flags anywhere among positional arguments, so
// "revoke SERIAL --reason x" works like "revoke --reason x SERIAL". A "--"
// ends flag parsing.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// flag stops at "--" (consumed) or at the first non-flag.
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func dirOf(fs *flag.FlagSet) string { return fs.Lookup("dir").Value.String() }

// listFlag collects a repeatable flag; commas also separate values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
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
