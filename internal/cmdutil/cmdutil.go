// Package cmdutil holds what every sallyport command shares on top of
// spf13/cobra: exit codes (0 ok, 1 failure, 2 bad usage), one-line error
// output, argument checks that count as usage errors, and the bridge that
// gives a Go flag.FlagSet's flags to a cobra command.
package cmdutil

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// UsageError is a wrong command line: Execute prints it with a pointer to
// --help and exits 2.
type UsageError struct{ Msg string }

func (e UsageError) Error() string { return e.Msg }

// Usagef makes a UsageError.
func Usagef(format string, args ...any) error { return UsageError{fmt.Sprintf(format, args...)} }

// ExitError ends the command with Code and no further message (the command
// has already said why, e.g. a failed check table).
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit %d", e.Code) }

// CodeError is a failure printed like any other ("sallyport: MESSAGE") that
// ends the command with Code instead of 1: for commands where 1 is an
// answer (policy explain: 0 allow, 1 deny, 2 error, like grep).
type CodeError struct {
	Code int
	Err  error
}

func (e CodeError) Error() string { return e.Err.Error() }
func (e CodeError) Unwrap() error { return e.Err }

// Execute runs root with args and returns the process exit code. Errors are
// printed as one line to stderr: "sallyport: MESSAGE" for a failure, and
// "COMMAND: MESSAGE" plus a --help hint for a usage error.
func Execute(root *cobra.Command, args []string, stdout, stderr io.Writer) int {
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return UsageError{err.Error()} })
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	var ee ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	var ue UsageError
	if errors.As(err, &ue) {
		fmt.Fprintf(stderr, "%s: %s\nRun '%s --help' for usage.\n", cmd.CommandPath(), ue.Msg, cmd.CommandPath())
		return 2
	}
	fmt.Fprintf(stderr, "%s: %s\n", root.Name(), OneLine(err.Error()))
	var ce CodeError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 1
}

// OneLine folds a multi-line message into one line.
func OneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(s), "\n", " ")), " ")
}

// NoArgs refuses positional arguments; on a command with subcommands the
// first one is reported as an unknown command.
func NoArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if cmd.HasAvailableSubCommands() {
		return Usagef("unknown command %q", args[0])
	}
	return Usagef("unexpected argument %q", args[0])
}

// ExactArgs wants exactly n positional arguments, named in the message.
func ExactArgs(n int, what string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) < n {
			return Usagef("missing %s", what)
		}
		if len(args) > n {
			return Usagef("unexpected argument %q", args[n])
		}
		return nil
	}
}

// NeedSubcommand is the RunE of a command that only groups subcommands:
// without one it prints the help to stderr and exits 2.
func NeedSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return Usagef("unknown command %q", args[0])
	}
	cmd.SetOut(cmd.ErrOrStderr())
	_ = cmd.Help()
	return ExitError{2}
}

// longNames gives one-letter Go flags a long name next to the shorthand.
var longNames = map[string]string{"o": "output", "c": "config"}

// AddGoFlags gives cmd the flags of fs (pflag style: --name, and -x for a
// one-letter flag, which also gets a long name). The values stay those of
// fs, so code reading fs sees what was parsed.
func AddGoFlags(cmd *cobra.Command, fs *flag.FlagSet) {
	fs.VisitAll(func(gf *flag.Flag) {
		pf := pflag.PFlagFromGoFlag(gf)
		if len(gf.Name) == 1 {
			pf.Shorthand = gf.Name
			if long, ok := longNames[gf.Name]; ok {
				pf.Name = long
			}
		}
		cmd.Flags().AddFlag(pf)
	})
}
