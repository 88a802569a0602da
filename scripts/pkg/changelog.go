package main

// The package's changelog (/usr/share/doc/sallyport/changelog.gz, Debian's
// format for a native package): one entry for the version being built,
// listing what changed since the last release tag (v*), one line a commit,
// from git. Dated by the newest commit, so two builds of one commit are
// byte for byte the same.

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// history is what the changelog entry is made of.
type history struct {
	since    string    // the release tag the entry starts after ("" = the first commit)
	subjects []string  // commit subjects, newest first
	date     time.Time // of the newest commit
}

// gitHistory reads the commits since the last v* tag of the repository at
// dir. Without git (a source tarball) it returns an error and the caller
// writes a plain entry.
func gitHistory(dir string) (history, error) {
	var h history
	git := func(args ...string) (string, error) {
		cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), err
	}
	if tag, err := git("describe", "--tags", "--abbrev=0", "--match", "v[0-9]*"); err == nil {
		h.since = tag
	}
	rng := "HEAD"
	if h.since != "" {
		rng = h.since + "..HEAD"
	}
	log, err := git("log", "--no-merges", "--format=%s", rng)
	if err != nil {
		return h, fmt.Errorf("git log: %w", err)
	}
	for _, s := range strings.Split(log, "\n") {
		if s = strings.TrimSpace(s); s != "" {
			h.subjects = append(h.subjects, s)
		}
	}
	ts, err := git("log", "-1", "--format=%ct", "HEAD")
	if err != nil {
		return h, fmt.Errorf("git log: %w", err)
	}
	var sec int64
	if _, err := fmt.Sscan(ts, &sec); err != nil {
		return h, fmt.Errorf("commit time %q: %w", ts, err)
	}
	h.date = time.Unix(sec, 0).UTC()
	return h, nil
}

// changelogWidth is the longest line Debian's tools and lintian accept.
const changelogWidth = 80

// wrap breaks s into lines of at most width columns, the first starting
// with first and the rest with rest.
func wrap(s, first, rest string, width int) []string {
	var lines []string
	cur := first
	for _, w := range strings.Fields(s) {
		switch {
		case cur == first || cur == rest:
			cur += w
		case len(cur)+1+len(w) <= width:
			cur += " " + w
		default:
			lines = append(lines, cur)
			cur = rest + w
		}
	}
	return append(lines, cur)
}

// changelogFile renders the changelog entry for version.
func changelogFile(version, maintainer string, h history) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%s) unstable; urgency=medium\n\n", projectName, version)
	items := h.subjects
	switch {
	case len(items) == 0:
		items = []string{"Built from a source tree without git history; see README.md and docs/ for what it does."}
	case h.since != "":
		b.WriteString(wrap("Changes since "+h.since+", newest first:", "  * ", "    ", changelogWidth)[0] + "\n")
	default:
		b.WriteString("  * Development snapshot; every change so far, newest first:\n")
	}
	ind, cont := "  * ", "    "
	if len(h.subjects) > 0 {
		ind, cont = "    - ", "      "
	}
	for _, s := range items {
		for _, l := range wrap(s, ind, cont, changelogWidth) {
			b.WriteString(l + "\n")
		}
	}
	fmt.Fprintf(&b, "\n -- %s  %s\n", maintainer, h.date.Format(time.RFC1123Z))
	return b.String()
}

// gzipped compresses b the way dh_compress does (gzip -9n): best
// compression, no name or time in the header, so the bytes depend on the
// content only.
func gzipped(b []byte) ([]byte, error) {
	var out bytes.Buffer
	zw, err := gzip.NewWriterLevel(&out, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
