package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/sallyport/sallyport/internal/adminsock"
)

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Main("test", args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestRun(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.toml")
	if err := os.WriteFile(bad, []byte("listen = \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missingSock := filepath.Join(t.TempDir(), "none.sock")
	durConf := filepath.Join(t.TempDir(), "dur.toml")
	if err := os.WriteFile(durConf, []byte("[tunnel]\nkeepalive = 10\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"no args", nil, 2, "", "Usage:"},
		{"help", []string{"help"}, 0, "sallyport up", ""},
		{"--help", []string{"--help"}, 0, "Usage:", ""},
		{"-h", []string{"-h"}, 0, "Usage:", ""},
		{"version", []string{"version"}, 0, "sallyport test\n", ""},
		{"--version", []string{"--version"}, 0, "sallyport test\n", ""},
		{"-v", []string{"-v"}, 0, "sallyport test\n", ""},
		{"unknown", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"unknown server subcommand", []string{"server", "frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"unknown flag", []string{"status", "--frob"}, 2, "", "unknown flag: --frob"},
		{"server bad config", []string{"server", "-c", bad}, 1, "", "bad.toml:1: key \"listen\": "},
		{"server missing config", []string{"server", "--config", "/nonexistent/server.toml"}, 1, "", "no such file"},
		{"up bad config", []string{"up", "-c", bad}, 1, "", "bad.toml"},
		{"bare number duration", []string{"server", "-c", durConf}, 1, "", `key "tunnel.keepalive": a duration is a string with a unit`},
		{"bad log level", []string{"server", "--log-level", "loud"}, 2, "", "--log-level"},
		{"status without daemon", []string{"status", "--socket", missingSock}, 3, "none: not up\n", ""},
		{"server status without daemon", []string{"server", "status", "--socket", missingSock}, 1, "", "is sallyport running?"},
		{"kick needs a device", []string{"server", "kick", "--socket", missingSock}, 2, "", "missing DEVICE"},
		{"kick without daemon", []string{"server", "kick", "--socket", missingSock, "alice"}, 1, "", "is sallyport running?"},
		{"kick flags after device", []string{"server", "kick", "alice", "--socket", missingSock}, 1, "", "is sallyport running?"},
		{"kick two devices", []string{"server", "kick", "alice", "bob", "--socket", missingSock}, 2, "", `unexpected argument "bob"`},
		{"kick has no --json", []string{"server", "kick", "alice", "--json"}, 2, "", "unknown flag: --json"},
		{"reload has no --json", []string{"server", "reload", "--json"}, 2, "", "unknown flag: --json"},
		{"down has no --json", []string{"down", "--json"}, 2, "", "unknown flag: --json"},
		{"socket and config exclusive", []string{"status", "--socket", missingSock, "-c", bad}, 2, "", "give one of NAME, -c FILE or --socket"},
		{"status takes one profile", []string{"status", "alice", "bob"}, 2, "", `unexpected argument "bob"`},
		{"pki help", []string{"pki", "--help"}, 0, "sallyport pki", ""},
		{"pki no command", []string{"pki"}, 2, "", "Usage:"},
		{"pki list has no --all", []string{"pki", "list", "--all"}, 2, "", "unknown flag: --all"},
		{"pki sign has no --key", []string{"pki", "sign", "--key", "ecdsa"}, 2, "", "unknown flag: --key"},
		{"pki flags after args", []string{"pki", "show", "/nonexistent.crt", "--dir", t.TempDir()}, 1, "", "nonexistent.crt"},
		{"completion bash", []string{"completion", "bash"}, 0, "complete -o default -F __start_sallyport sallyport", ""},
		{"completion zsh", []string{"completion", "zsh"}, 0, "#compdef sallyport", ""},
		{"completion fish", []string{"completion", "fish"}, 0, "complete -c sallyport", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errs := run(tt.args...)
			if code != tt.code || !strings.Contains(out, tt.stdout) || !strings.Contains(errs, tt.stderr) {
				t.Fatalf("sallyport %q = %d, want %d with %q/%q\nstdout: %s\nstderr: %s", tt.args, code, tt.code, tt.stdout, tt.stderr, out, errs)
			}
			if tt.code != 0 && (hasVerb(errs) || strings.Contains(errs, "%!")) {
				t.Errorf("a format verb reached the message (verbs_test.go):\n%s", errs)
			}
			if tt.code == 1 && (strings.Count(strings.TrimSpace(errs), "\n") != 0 || !strings.HasPrefix(errs, "sallyport: ") || strings.Contains(errs, "level=")) {
				t.Errorf("a failure must be one plain line on stderr starting with \"sallyport: \", got:\n%s", errs)
			}
		})
	}
}

// flagLine is a well-formed flag line of cobra's help: "-x, --name type  text"
// or "    --name type  text", the type at most one word.
var flagLine = regexp.MustCompile(`^\s+(-[a-zA-Z], )?--[a-z0-9][a-z0-9-]*( [a-zA-Z0-9]+)?\s{2,}\S`)

// flagRef is a flag named in a usage line or an example.
var flagRef = regexp.MustCompile(`(?:^|[\s\[|])(--?[a-zA-Z][a-zA-Z0-9-]*)`)

// TestHelpWalk runs --help on every command and subcommand: exit 0, a usage
// line, well-formed flag lines, and every flag named in the usage or the
// examples exists on that command.
func TestHelpWalk(t *testing.T) {
	var walk func(c *cobra.Command)
	var root *cobra.Command
	n := 0
	walk = func(c *cobra.Command) {
		n++
		path := strings.Fields(c.CommandPath())[1:]
		name := strings.Join(append([]string{"sallyport"}, path...), " ")
		t.Run(name, func(t *testing.T) {
			for _, h := range []string{"--help", "-h"} {
				code, out, errs := run(append(append([]string{}, path...), h)...)
				if code != 0 || errs != "" || !strings.Contains(out, "Usage:\n  "+name) {
					t.Fatalf("%s %s: exit %d\nstdout: %s\nstderr: %s", name, h, code, out, errs)
				}
				if strings.Contains(out, "`") {
					t.Errorf("%s %s: stray backquote (flag help would lose words):\n%s", name, h, out)
				}
				inFlags := false
				for _, line := range strings.Split(out, "\n") {
					switch {
					case strings.HasSuffix(line, "Flags:"):
						inFlags = true
					case line == "":
						inFlags = false
					case inFlags && !flagLine.MatchString(line) && !strings.HasPrefix(line, "         "):
						t.Errorf("%s %s: broken flag line %q", name, h, line)
					}
				}
			}
			// A flag's value is shown by a word a user reads ("int",
			// "strings", "time"), not by a Go type's name ("intFlag").
			c.LocalFlags().VisitAll(func(f *pflag.Flag) {
				if !helpTypes[f.Value.Type()] {
					t.Errorf("%s --%s: value type %q in --help", name, f.Name, f.Value.Type())
				}
			})
			// Each line of the usage and examples is checked against the
			// command it runs.
			lines := []struct {
				c    *cobra.Command
				text string
			}{{c, c.Use}}
			for _, ex := range strings.Split(c.Example, "\n") {
				fields := strings.Fields(ex)
				for len(fields) > 0 && fields[0] != "sallyport" {
					fields = fields[1:]
				}
				if len(fields) == 0 {
					continue
				}
				target, _, err := root.Find(fields[1:])
				if err != nil {
					t.Errorf("%s: example %q: %v", name, ex, err)
					continue
				}
				lines = append(lines, struct {
					c    *cobra.Command
					text string
				}{target, strings.Join(fields[1:], " ")})
			}
			for _, ln := range lines {
				checkFlagRefs(t, name, ln.c, ln.text)
			}
		})
		for _, sub := range c.Commands() {
			if !sub.Hidden {
				walk(sub)
			}
		}
	}
	root = NewRoot("test")
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	walk(root)
	if n < 20 {
		t.Errorf("walked only %d commands", n)
	}
}

// helpTypes are the value types --help may show (pflag's own words).
var helpTypes = map[string]bool{"bool": true, "string": true, "int": true, "uint": true, "strings": true, "stringArray": true, "duration": true, "time": true, "float64": true}

// checkFlagRefs fails t for a flag named in text that c does not have.
func checkFlagRefs(t *testing.T, name string, c *cobra.Command, text string) {
	t.Helper()
	for _, m := range flagRef.FindAllStringSubmatch(text, -1) {
		f := m[1]
		var ok bool
		if strings.HasPrefix(f, "--") {
			ok = c.Flags().Lookup(f[2:]) != nil || c.InheritedFlags().Lookup(f[2:]) != nil || f == "--help" || f == "--version"
		} else if len(f) == 2 {
			ok = c.Flags().ShorthandLookup(f[1:]) != nil || f == "-h" || f == "-v"
		} else {
			t.Errorf("%s: %q is a single-dash long flag (use --%s)", name, f, f[1:])
			continue
		}
		if !ok {
			t.Errorf("%s: %q names %s, which %q does not have", name, text, f, c.CommandPath())
		}
	}
}

func TestWithHint(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string // "" means unchanged
	}{
		{"not a permission error", errors.New("boom"), ""},
		{"already names a capability", fmt.Errorf("open TUN: %w (needs CAP_NET_ADMIN)", syscall.EPERM), ""},
		{"unreadable file", &fs.PathError{Op: "open", Path: "/etc/sallyport/server.key", Err: syscall.EACCES}, "/etc/sallyport/server.key is not readable by uid"},
		{"privileged port", fmt.Errorf("listen 0.0.0.0:443: %w", &net.OpError{Op: "listen", Net: "tcp", Err: &os.SyscallError{Syscall: "bind", Err: syscall.EACCES}}), "CAP_NET_BIND_SERVICE"},
		{"netlink", fmt.Errorf("add address: %w", syscall.EPERM), "needs root or CAP_NET_ADMIN"},
		{"chown to a group", fmt.Errorf("admin socket: group: %w", &fs.PathError{Op: "chown", Path: "/run/sallyport/server.sock", Err: syscall.EPERM}), "SupplementaryGroups="},
		// A unix socket's bind is about its directory, never about ports.
		{"admin socket directory", &adminsock.DirError{Socket: "/run/sallyport/client-acme.sock", Dir: "/run/sallyport", UID: 1000, Err: syscall.EACCES}, ""},
		{"unix bind", fmt.Errorf("x: %w", &net.OpError{Op: "listen", Net: "unix", Err: &os.SyscallError{Syscall: "bind", Err: syscall.EACCES}}), "needs root"},
	}
	for _, tt := range tests {
		got := withHint(tt.err).Error()
		if tt.want == "" && got != tt.err.Error() || tt.want != "" && !strings.Contains(got, tt.want) {
			t.Errorf("%s: withHint(%q) = %q, want %q", tt.name, tt.err, got, tt.want)
		}
		if strings.Contains(tt.err.Error(), "unix") && strings.Contains(got, "ports below 1024") {
			t.Errorf("%s: a TCP port hint on a unix socket: %q", tt.name, got)
		}
		if !errors.Is(withHint(tt.err), tt.err) {
			t.Errorf("%s: the hint must wrap the error", tt.name)
		}
	}
}

// docCommand is a sallyport command line in the documentation: in a code
// block or a `code span`, up to a comment, a pipe or the span's end.
var docCommand = regexp.MustCompile("(?:^|[\\s`(])sallyport ([a-z][^`#|;)\n]*)")

// TestDocsCommands: every sallyport command the user documentation
// (README.md, docs/*.md, ARCHITECTURE.md, the annotated configs, the
// units) shows exists, and every flag it gives it has: an admin who
// copies a line from the docs gets that command, not "unknown flag".
func TestDocsCommands(t *testing.T) {
	root := moduleRoot(t)
	files := []string{"README.md", "ARCHITECTURE.md", "configs/server.toml", "configs/client.toml"}
	for _, glob := range []string{"docs/*.md", "systemd/*.in"} {
		m, _ := filepath.Glob(filepath.Join(root, glob))
		for _, f := range m {
			rel, _ := filepath.Rel(root, f)
			files = append(files, rel)
		}
	}
	cmdRoot := NewRoot("test")
	cmdRoot.InitDefaultHelpCmd()
	cmdRoot.InitDefaultCompletionCmd()
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		// Shell lines continued with a backslash are one command.
		text := strings.ReplaceAll(string(b), "\\\n", " ")
		for i, line := range strings.Split(text, "\n") {
			for _, m := range docCommand.FindAllStringSubmatch(line, -1) {
				words := strings.Fields(m[1])
				var path []string
				for _, w := range words {
					if strings.HasPrefix(w, "-") {
						break
					}
					path = append(path, w)
				}
				c, rest, err := cmdRoot.Find(path)
				if err != nil || c == cmdRoot {
					continue // prose ("sallyport is a VPN"), not a command
				}
				// A word after the command that names no subcommand of one
				// that has them is a misspelt subcommand.
				if len(rest) > 0 && c.HasSubCommands() && rest[0] == strings.ToLower(rest[0]) && !strings.ContainsAny(rest[0], "<[.") {
					t.Errorf("%s:%d: %q: %q has no subcommand %q", f, i+1, m[1], c.CommandPath(), rest[0])
					continue
				}
				n++
				checkFlagRefs(t, fmt.Sprintf("%s:%d", f, i+1), c, strings.Join(words[len(path)-len(rest):], " "))
			}
		}
	}
	if n < 50 {
		t.Errorf("found only %d sallyport command lines in the docs", n)
	}
}
