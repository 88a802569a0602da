package main

// The package's copyright file (/usr/share/doc/sallyport/copyright), in
// Debian's machine-readable format (DEP-5). The binary links the Go
// standard library and the Go modules go.mod names; their licenses ask for
// their notices to travel with the binary, so each gets a paragraph with
// its copyright lines and license, read from the module's own license file
// in the module cache. A module whose license this file does not recognise
// stops the build: a new dependency's license is a decision, not a default.

import (
	"debug/buildinfo"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"unicode"
)

// Project is what the copyright file says of sallyport itself. The
// repository has no license file; the package metadata has always said
// "proprietary", so that is what the file states.
const (
	projectName    = "sallyport"
	projectSource  = "https://github.com/sallyport/sallyport"
	projectLicense = "proprietary"
	projectText    = `The sallyport source carries no license file. Its package metadata
states "proprietary": all rights are reserved by the sallyport authors
and no license to copy, modify or redistribute sallyport itself is
granted by this package. The third-party components below keep their own
licenses.`
)

// commonLicenses are the licenses Debian ships under
// /usr/share/common-licenses, cited there instead of copied.
var commonLicenses = map[string]string{
	"Apache-2.0": "Apache License, Version 2.0",
	"MPL-2.0":    "Mozilla Public License, Version 2.0",
}

// licenseFileNames are the names a module's license file goes by.
var licenseFileNames = []string{"LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "LICENCE.txt", "COPYING", "COPYING.txt"}

// classify names a license text by its DEP-5 short name, or returns "".
func classify(text string) string {
	t := strings.Join(strings.Fields(text), " ")
	switch {
	case strings.Contains(t, "Apache License") && strings.Contains(t, "Version 2.0"):
		return "Apache-2.0"
	case strings.Contains(t, "Mozilla Public License Version 2.0") || strings.Contains(t, "Mozilla Public License, version 2.0"):
		return "MPL-2.0"
	case strings.Contains(t, "Permission is hereby granted, free of charge"):
		return "Expat"
	case strings.Contains(t, "Permission to use, copy, modify, and/or distribute this software for any purpose") ||
		strings.Contains(t, "Permission to use, copy, modify, and distribute this software for any purpose with or without fee"):
		return "ISC"
	case strings.Contains(t, "Redistribution and use in source and binary forms"):
		if strings.Contains(t, "Neither the name") || strings.Contains(t, "names of its contributors may be used") || strings.Contains(t, "name of the copyright holder nor") {
			return "BSD-3-clause"
		}
		return "BSD-2-clause"
	}
	return ""
}

var copyrightLine = regexp.MustCompile(`(?i)^\s*copyright\s*(\(c\)|©)?\s*(.*\d.*)$`)

// holders returns the copyright statements of a license text ("" lines of
// a template are left out), without the "Copyright (c)" prefix.
func holders(text string) []string {
	var out []string
	for _, line := range strings.Split(text, "\n") {
		m := copyrightLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		h := strings.TrimSpace(m[2])
		if h == "" || strings.Contains(h, "[yyyy]") || strings.Contains(h, "{yyyy}") || strings.HasPrefix(strings.ToLower(h), "notice") {
			continue
		}
		if !contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// escapeModule is the module cache's spelling of a module path (an upper
// case letter becomes '!' and the lower case letter).
func escapeModule(p string) string {
	var b strings.Builder
	for _, r := range p {
		if unicode.IsUpper(r) {
			b.WriteByte('!')
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// component is one part of the binary with its license.
type component struct {
	name, version, files string
	holders              []string
	license, text        string
}

// components lists the Go standard library and every module linked into
// the binary at bin, with their licenses from goroot and modcache.
func components(bin, goroot, modcache string) ([]component, error) {
	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("build info of %s: %w", bin, err)
	}
	std, err := readLicense(goroot)
	if err != nil {
		return nil, fmt.Errorf("the Go standard library: %w", err)
	}
	out := []component{{name: "the Go standard library and runtime", version: bi.GoVersion, files: "go/*",
		holders: holders(std), license: classify(std), text: std}}
	if out[0].license == "" {
		return nil, errors.New("the Go standard library: license not recognised")
	}
	for _, d := range bi.Deps {
		m := d
		if d.Replace != nil {
			m = d.Replace
		}
		dir := filepath.Join(modcache, escapeModule(m.Path)+"@"+m.Version)
		if filepath.IsAbs(m.Path) || strings.HasPrefix(m.Path, ".") {
			dir = m.Path // a local replacement
		}
		text, err := readLicense(dir)
		if err != nil {
			return nil, fmt.Errorf("module %s %s: %w", d.Path, d.Version, err)
		}
		c := component{name: d.Path, version: d.Version, files: "vendor/" + d.Path + "/*", holders: holders(text), license: classify(text), text: text}
		if c.license == "" {
			return nil, fmt.Errorf("module %s %s: license in %s not recognised; add it to scripts/pkg/copyright.go after checking it may be shipped", d.Path, d.Version, dir)
		}
		if len(c.holders) == 0 {
			c.holders = []string{"the " + d.Path + " authors"}
		}
		out = append(out, c)
	}
	sort.SliceStable(out[1:], func(i, j int) bool { return out[1+i].name < out[1+j].name })
	return out, nil
}

func readLicense(dir string) (string, error) {
	for _, n := range licenseFileNames {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err == nil {
			return string(b), nil
		}
	}
	return "", fmt.Errorf("no license file (%s) in %s", strings.Join(licenseFileNames, ", "), dir)
}

// formatText indents a license text as a DEP-5 field continuation: every
// line one space in, empty lines as " .".
func formatText(text string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(strings.ReplaceAll(text, "\r\n", "\n"), "\n \t"), "\n") {
		line = strings.TrimRight(strings.ReplaceAll(line, "\t", "    "), " ")
		if line == "" {
			b.WriteString(" .\n")
			continue
		}
		b.WriteString(" " + line + "\n")
	}
	return b.String()
}

// copyrightFile renders the DEP-5 copyright file.
func copyrightFile(maintainer string, comps []component) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n")
	fmt.Fprintf(&b, "Upstream-Name: %s\nUpstream-Contact: %s\nSource: %s\n", projectName, maintainer, projectSource)
	fmt.Fprintf(&b, "Comment: /usr/bin/sallyport is one Go program: sallyport's own code, the\n Go standard library and the Go modules listed below, each under its own\n license. Files: patterns name the component, not a path in this package.\n\n")
	fmt.Fprintf(&b, "Files: *\nCopyright: the sallyport authors\nLicense: %s\n%s\n", projectLicense, formatText(projectText))
	used := map[string]bool{}
	for _, c := range comps {
		fmt.Fprintf(&b, "Files: %s\nCopyright: %s\n", c.files, strings.Join(c.holders, "\n "))
		if _, common := commonLicenses[c.license]; common {
			used[c.license] = true
			fmt.Fprintf(&b, "License: %s\nComment: %s %s\n\n", c.license, c.name, c.version)
			continue
		}
		fmt.Fprintf(&b, "License: %s\n%sComment: %s %s\n\n", c.license, formatText(c.text), c.name, c.version)
	}
	names := make([]string, 0, len(used))
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "License: %s\n On Debian systems, the full text of the %s can be found in\n /usr/share/common-licenses/%s.\n\n", n, commonLicenses[n], n)
	}
	return strings.TrimSuffix(b.String(), "\n")
}
