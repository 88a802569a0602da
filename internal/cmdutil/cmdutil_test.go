package cmdutil

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// testRoot is a small tree: root (groups only) -> grp (groups only) -> leaf
// (one positional NAME, a Go flag set bridged in).
func testRoot(run func(cmd *cobra.Command, args []string) error, fs *flag.FlagSet) *cobra.Command {
	root := &cobra.Command{Use: "tool", Args: NoArgs, RunE: NeedSubcommand}
	grp := &cobra.Command{Use: "grp", Short: "a group", Args: NoArgs, RunE: NeedSubcommand}
	leaf := &cobra.Command{Use: "leaf NAME", Short: "a leaf", Args: ExactArgs(1, "NAME"), RunE: run}
	plain := &cobra.Command{Use: "plain", Short: "no args", Args: NoArgs, RunE: func(*cobra.Command, []string) error { return nil }}
	if fs != nil {
		AddGoFlags(leaf, fs)
	}
	grp.AddCommand(leaf)
	root.AddCommand(grp, plain)
	return root
}

func TestExecute(t *testing.T) {
	ok := func(cmd *cobra.Command, args []string) error {
		fmt.Fprintln(cmd.OutOrStdout(), "hello", args[0])
		return nil
	}
	for _, tt := range []struct {
		name         string
		args         []string
		run          func(*cobra.Command, []string) error
		code         int
		stdout       string
		stderr       string
		stderrAbsent string
	}{
		{"ok", []string{"grp", "leaf", "x"}, ok, 0, "hello x\n", "", ""},
		{"help exits 0 on stdout", []string{"grp", "--help"}, ok, 0, "Usage:", "", ""},
		{"no subcommand: help on stderr, exit 2", nil, ok, 2, "", "Usage:", ""},
		{"group without subcommand", []string{"grp"}, ok, 2, "", "tool grp [command]", ""},
		{"unknown subcommand", []string{"grp", "nope"}, ok, 2, "", `tool grp: unknown command "nope"`, ""},
		{"missing positional", []string{"grp", "leaf"}, ok, 2, "", "tool grp leaf: missing NAME\nRun 'tool grp leaf --help' for usage.\n", ""},
		{"extra positional", []string{"grp", "leaf", "a", "b"}, ok, 2, "", `unexpected argument "b"`, ""},
		{"positional on a leaf without args", []string{"plain", "x"}, ok, 2, "", `tool plain: unexpected argument "x"`, ""},
		{"unknown flag is a usage error", []string{"grp", "leaf", "--frob", "x"}, ok, 2, "", "unknown flag: --frob", ""},
		{"usage error from RunE", []string{"grp", "leaf", "x"}, func(*cobra.Command, []string) error { return fmt.Errorf("wrapped: %w", Usagef("bad %s", "value")) }, 2, "", "tool grp leaf: bad value\n", ""},
		{"failure: one line", []string{"grp", "leaf", "x"}, func(*cobra.Command, []string) error { return errors.New("first\n  second\n") }, 1, "", "tool: first second\n", "Usage"},
		{"code error: its code, the message on one line", []string{"grp", "leaf", "x"}, func(*cobra.Command, []string) error {
			return fmt.Errorf("explain: %w", CodeError{2, errors.New("no such\nfile")})
		}, 2, "", "tool: explain: no such file\n", ""},
		{"exit error: code, no message", []string{"grp", "leaf", "x"}, func(*cobra.Command, []string) error { return fmt.Errorf("check: %w", ExitError{3}) }, 3, "", "", "exit"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Execute(testRoot(tt.run, nil), tt.args, &out, &errb)
			if code != tt.code || !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errb.String(), tt.stderr) ||
				(tt.stderrAbsent != "" && strings.Contains(errb.String(), tt.stderrAbsent)) {
				t.Fatalf("Execute(%q) = %d, want %d with stdout %q, stderr %q\nstdout: %s\nstderr: %s", tt.args, code, tt.code, tt.stdout, tt.stderr, out.String(), errb.String())
			}
			if tt.code == 0 && errb.Len() != 0 {
				t.Errorf("success wrote to stderr: %s", errb.String())
			}
		})
	}
}

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"":                         "",
		"plain":                    "plain",
		"  a\n\tb  \n\nc\n":        "a b c",
		"load x:\n  line 3: bad\n": "load x: line 3: bad",
	} {
		if got := OneLine(in); got != want {
			t.Errorf("OneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAddGoFlags(t *testing.T) {
	fs := flag.NewFlagSet("leaf", flag.ContinueOnError)
	out := fs.String("o", "", "output file")
	cfg := fs.String("c", "", "config file")
	n := fs.Int("n", 1, "count")
	days := fs.Int("days", 0, "lifetime")
	var got []string
	run := func(_ *cobra.Command, args []string) error { got = args; return nil }
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"grp", "leaf", "-o", "f1", "-c", "c1", "-n", "2", "--days", "3", "x"}, "f1 c1 2 3"},
		{[]string{"grp", "leaf", "--output", "f2", "--config=c2", "x", "-n=4"}, "f2 c2 4 0"},
	} {
		*out, *cfg, *n, *days = "", "", 0, 0
		if code := Execute(testRoot(run, fs), tt.args, &bytes.Buffer{}, &bytes.Buffer{}); code != 0 {
			t.Fatalf("Execute(%q) = %d", tt.args, code)
		}
		if s := fmt.Sprintf("%s %s %d %d", *out, *cfg, *n, *days); s != tt.want || len(got) != 1 || got[0] != "x" {
			t.Errorf("Execute(%q): flags %q args %q, want %q and [x]", tt.args, s, got, tt.want)
		}
		fs = flag.NewFlagSet("leaf", flag.ContinueOnError)
		out, cfg, n, days = fs.String("o", "", ""), fs.String("c", "", ""), fs.Int("n", 1, ""), fs.Int("days", 0, "")
	}
}
