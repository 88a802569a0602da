// Command gendoc writes sallyport's man pages (section 1, one per command,
// from the command tree; section 5, sallyport-server.toml and
// sallyport-client.toml, from the annotated example configs) and its bash,
// zsh and fish completion scripts, so they are generated at build time and
// never drift from the flags and keys (`make man`; the packages and make
// install ship them).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/sallyport/sallyport/cmd/sallyport/cli"
)

func main() {
	manDir := flag.String("man", "bin/man", "directory for the man pages")
	compDir := flag.String("completions", "bin/completions", "directory for the completion scripts")
	version := flag.String("version", "dev", "version named in the man pages")
	configs := flag.String("configs", "configs", "directory of the annotated example configs (section 5 pages)")
	flag.Parse()
	if err := gen(*manDir, *compDir, *configs, *version); err != nil {
		fmt.Fprintln(os.Stderr, "gendoc:", err)
		os.Exit(1)
	}
}

func gen(manDir, compDir, configs, version string) error {
	root := cli.NewRoot(version)
	root.DisableAutoGenTag = true
	for _, d := range []string{manDir, compDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	forManPages(root)
	hdr := &doc.GenManHeader{Title: "SALLYPORT", Section: "1", Source: "sallyport " + version, Manual: "sallyport manual"}
	if err := doc.GenManTree(root, hdr, manDir); err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	if err := genConfPages(manDir, configs, version); err != nil {
		return fmt.Errorf("config man pages: %w", err)
	}
	if err := root.GenBashCompletionFileV2(filepath.Join(compDir, "sallyport.bash"), true); err != nil {
		return fmt.Errorf("bash completion: %w", err)
	}
	if err := root.GenZshCompletionFile(filepath.Join(compDir, "_sallyport")); err != nil {
		return fmt.Errorf("zsh completion: %w", err)
	}
	if err := root.GenFishCompletionFile(filepath.Join(compDir, "sallyport.fish"), true); err != nil {
		return fmt.Errorf("fish completion: %w", err)
	}
	return nil
}

// forManPages makes every command's long help render in a man page as it
// reads in --help. cobra/doc reads the text as Markdown, where lines
// indented by two spaces (our tables of options and values) are filled
// into one paragraph and long words there (a PKCS#11 URI) cannot be
// adjusted; indented by four and set off by blank lines they are a
// preformatted block, kept line by line.
func forManPages(c *cobra.Command) {
	c.Long = manText(c.Long)
	for _, s := range c.Commands() {
		forManPages(s)
	}
}

// manText turns each run of indented lines into a Markdown code block.
func manText(s string) string {
	lines := strings.Split(s, "\n")
	var out []string
	in := false
	for _, l := range lines {
		indented := strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")
		switch {
		case indented && !in:
			if len(out) > 0 && strings.TrimSpace(out[len(out)-1]) != "" {
				out = append(out, "")
			}
			in = true
		case !indented && in && strings.TrimSpace(l) != "":
			out = append(out, "")
			in = false
		}
		if in {
			l = "    " + l
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
