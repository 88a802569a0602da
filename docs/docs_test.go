// Package docs holds the user documentation (Markdown) that README.md links
// to; this test keeps the links between README.md, ARCHITECTURE.md and
// docs/*.md true and README.md a short front door.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	linkRe    = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	headingRe = regexp.MustCompile("(?m)^#{1,6} +(.+?) *$")
	fenceRe   = regexp.MustCompile("(?ms)^```.*?^```")
)

// anchor is GitHub's anchor for a heading: lower case, punctuation other
// than '-' and '_' dropped, spaces to '-'.
func anchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func anchors(t *testing.T, path string) map[string]bool {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, m := range headingRe.FindAllStringSubmatch(fenceRe.ReplaceAllString(string(b), ""), -1) {
		out[anchor(m[1])] = true
	}
	return out
}

// TestLinks: every relative link in the user documentation names a file
// that exists and, with #anchor, a heading in it; every docs/*.md page is
// linked from README.md, so nothing is written where nobody finds it.
func TestLinks(t *testing.T) {
	pages, _ := filepath.Glob("*.md")
	if len(pages) < 5 {
		t.Fatalf("only %d pages in docs/", len(pages))
	}
	files := []string{"../README.md", "../ARCHITECTURE.md"}
	files = append(files, pages...)
	linked := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range linkRe.FindAllStringSubmatch(fenceRe.ReplaceAllString(string(b), ""), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			file, frag, _ := strings.Cut(target, "#")
			path := f
			if file != "" {
				path = filepath.Join(filepath.Dir(f), file)
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s: link %q: %v", f, target, err)
				continue
			}
			if f == "../README.md" {
				linked[filepath.Clean(path)] = true
			}
			if frag != "" && strings.HasSuffix(path, ".md") && !anchors(t, path)[frag] {
				t.Errorf("%s: link %q: no heading with anchor #%s in %s", f, target, frag, path)
			}
		}
	}
	for _, p := range pages {
		if !linked[filepath.Clean(filepath.Join("..", "docs", p))] {
			t.Errorf("docs/%s is not linked from README.md", p)
		}
	}
}

// TestReadmeIsAFrontDoor: README.md stays a front door (what it is, quick
// start, install, first gateway, first laptop, day 2, links); the rest
// belongs in docs/.
func TestReadmeIsAFrontDoor(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n > 400 {
		t.Errorf("README.md has %d lines; keep it under 400 and move the detail to docs/", n)
	}
	have := anchors(t, "../README.md")
	for _, h := range []string{"quick-start", "install", "first-gateway", "first-laptop", "day-2", "documentation"} {
		if !have[h] {
			t.Errorf("README.md has no section #%s", h)
		}
	}
}
