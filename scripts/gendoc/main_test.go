package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/sallyport/sallyport/cmd/sallyport/cli"
)

// TestGen: one man page per visible command, naming the version, and the
// three completion scripts, all from the live command tree.
func TestGen(t *testing.T) {
	dir := t.TempDir()
	man, comp := filepath.Join(dir, "man"), filepath.Join(dir, "completions")
	if err := gen(man, comp, "../../configs", "1.2.3"); err != nil {
		t.Fatal(err)
	}
	var want []string
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if !c.IsAvailableCommand() && c.HasParent() {
			return
		}
		want = append(want, strings.ReplaceAll(c.CommandPath(), " ", "-")+".1")
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(cli.NewRoot("1.2.3"))
	if len(want) < 20 {
		t.Fatalf("only %d commands in the tree", len(want))
	}
	for _, name := range want {
		b, err := os.ReadFile(filepath.Join(man, name))
		if err != nil {
			t.Errorf("no man page %s: %v", name, err)
			continue
		}
		if !strings.Contains(string(b), `"sallyport 1.2.3"`) || !strings.HasPrefix(string(b), ".nh\n.TH \"SALLYPORT\" \"1\"") {
			t.Errorf("%s: header without section 1 or the version:\n%.200s", name, b)
		}
	}
	for name, marker := range map[string]string{
		"sallyport.bash": "__start_sallyport",
		"_sallyport":     "#compdef sallyport",
		"sallyport.fish": "complete -c sallyport",
	} {
		if b, err := os.ReadFile(filepath.Join(comp, name)); err != nil || !strings.Contains(string(b), marker) {
			t.Errorf("completion %s: %v (want %q)", name, err, marker)
		}
	}
}

// TestGenErrors: a file that cannot be written is an error naming what was
// being written, never a half-silent success.
func TestGenErrors(t *testing.T) {
	for _, tt := range []struct{ blocker, want string }{
		{"", "not a directory"},
		{"man/sallyport.1", "man pages"},
		{"completions/sallyport.bash", "bash completion"},
		{"completions/_sallyport", "zsh completion"},
		{"completions/sallyport.fish", "fish completion"},
	} {
		dir := t.TempDir()
		man, comp := filepath.Join(dir, "man"), filepath.Join(dir, "completions")
		if tt.blocker == "" {
			os.WriteFile(filepath.Join(dir, "file"), nil, 0o600)
			man = filepath.Join(dir, "file", "man")
		} else if err := os.MkdirAll(filepath.Join(dir, tt.blocker), 0o755); err != nil { // a directory where a file goes
			t.Fatal(err)
		}
		if err := gen(man, comp, "../../configs", "x"); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("blocked by %q: %v, want %q", tt.blocker, err, tt.want)
		}
	}
}

// TestMainFlags: `go run ./scripts/gendoc -man DIR -completions DIR -version V`
// as make man runs it.
func TestMainFlags(t *testing.T) {
	dir := t.TempDir()
	flag.CommandLine = flag.NewFlagSet("gendoc", flag.ExitOnError) // main defines its flags on it
	os.Args = []string{"gendoc", "-man", filepath.Join(dir, "m"), "-completions", filepath.Join(dir, "c"), "-version", "9.9", "-configs", "../../configs"}
	main()
	if b, err := os.ReadFile(filepath.Join(dir, "m", "sallyport-version.1")); err != nil || !strings.Contains(string(b), "sallyport 9.9") {
		t.Errorf("man page after main: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "c", "_sallyport")); err != nil {
		t.Error(err)
	}
}

// TestManText: indented runs of --help text (tables of options) become
// preformatted blocks set off by blank lines, so the man page keeps them
// line by line instead of filling them into a paragraph; other text is
// left alone.
func TestManText(t *testing.T) {
	in := "Where:\n  --a   one\n        two\nAfter.\n\nPlain\ntext."
	want := "Where:\n\n      --a   one\n            two\n\nAfter.\n\nPlain\ntext."
	if got := manText(in); got != want {
		t.Errorf("manText:\n%q\nwant\n%q", got, want)
	}
	if got := manText("no blocks here"); got != "no blocks here" {
		t.Errorf("plain text changed: %q", got)
	}
}
