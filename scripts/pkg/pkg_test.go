package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestClassify: the license texts of the modules sallyport links are named
// by their DEP-5 short names; an unknown text is "" (the build stops).
func TestClassify(t *testing.T) {
	for _, tt := range []struct{ text, want string }{
		{"Apache License\n Version 2.0, January 2004\n http://www.apache.org/licenses/", "Apache-2.0"},
		{"Mozilla Public License Version 2.0\n==================================", "MPL-2.0"},
		{"The MIT License (MIT)\nCopyright (c) 2013 TOML authors\nPermission is hereby granted, free of charge, to any person", "Expat"},
		{"Copyright (c) 2009 The Go Authors.\nRedistribution and use in source and binary forms, with or without\nmodification ...\n * Neither the name of Google LLC nor the names of its\ncontributors", "BSD-3-clause"},
		{"Copyright (c) 2015, Dave Cheney\nRedistribution and use in source and binary forms, with or without\nmodification, are permitted provided that the following conditions are met:\n* Redistributions of source code must retain", "BSD-2-clause"},
		{"Permission to use, copy, modify, and/or distribute this software for any\npurpose with or without fee is hereby granted", "ISC"},
		{"All rights reserved. You may not use this file.", ""},
		{"GNU GENERAL PUBLIC LICENSE Version 3", ""},
	} {
		if got := classify(tt.text); got != tt.want {
			t.Errorf("classify(%.40q) = %q, want %q", tt.text, got, tt.want)
		}
	}
}

func TestHolders(t *testing.T) {
	text := "MIT\nCopyright (c) 2013 TOML authors\nCopyright © 2020 Jane Doe <j@example.com>\n   Copyright [yyyy] [name of copyright owner]\nCopyright notice and this permission\nCopyright (c) 2013 TOML authors\n"
	got := holders(text)
	want := []string{"2013 TOML authors", "2020 Jane Doe <j@example.com>"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("holders = %q, want %q", got, want)
	}
}

func TestEscapeModule(t *testing.T) {
	if got := escapeModule("github.com/BurntSushi/toml"); got != "github.com/!burnt!sushi/toml" {
		t.Errorf("escapeModule = %s", got)
	}
}

// TestCopyrightFile: the file is DEP-5: the format line, the project's
// own paragraph first, every component with a license, the common
// licenses cited once as standalone paragraphs, continuation lines
// indented, blank lines inside a field as " .".
func TestCopyrightFile(t *testing.T) {
	comps := []component{
		{name: "the Go standard library and runtime", version: "go1.26", files: "go/*", holders: []string{"2009 The Go Authors"}, license: "BSD-3-clause", text: "Copyright 2009 The Go Authors.\n\nRedistribution and use\n\tin source"},
		{name: "github.com/spf13/cobra", version: "v1.10.2", files: "vendor/github.com/spf13/cobra/*", holders: []string{"the github.com/spf13/cobra authors"}, license: "Apache-2.0"},
		{name: "golang.zx2c4.com/wireguard", version: "v0.0.0", files: "vendor/golang.zx2c4.com/wireguard/*", holders: []string{"2017-2023 WireGuard LLC"}, license: "Expat", text: "Copyright (C) 2017-2023 WireGuard LLC.\nPermission is hereby granted, free of charge"},
	}
	f := copyrightFile(maintainer, comps)
	if !strings.HasPrefix(f, "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n") {
		t.Errorf("no Format line first:\n%s", f)
	}
	paras := strings.Split(f, "\n\n")
	if !strings.HasPrefix(paras[1], "Files: *\nCopyright: the sallyport authors\nLicense: proprietary\n") {
		t.Errorf("the project's paragraph is not the first Files paragraph:\n%s", paras[1])
	}
	for _, want := range []string{
		"Files: go/*\nCopyright: 2009 The Go Authors\nLicense: BSD-3-clause\n Copyright 2009 The Go Authors.\n .\n Redistribution and use\n     in source\n",
		"Files: vendor/github.com/spf13/cobra/*\nCopyright: the github.com/spf13/cobra authors\nLicense: Apache-2.0\nComment: github.com/spf13/cobra v1.10.2",
		"License: Apache-2.0\n On Debian systems, the full text of the Apache License, Version 2.0 can be found in\n /usr/share/common-licenses/Apache-2.0.",
		"License: Expat\n Copyright (C) 2017-2023 WireGuard LLC.\n",
	} {
		if !strings.Contains(f, want) {
			t.Errorf("copyright lacks\n%s\nin\n%s", want, f)
		}
	}
	if strings.Count(f, "License: Apache-2.0\n On Debian") != 1 {
		t.Errorf("the Apache-2.0 paragraph is not there exactly once")
	}
	for i, line := range strings.Split(f, "\n") {
		if line == "" {
			continue
		}
		if !strings.HasPrefix(line, " ") && !strings.Contains(line, ": ") {
			t.Errorf("line %d is neither a field nor a continuation: %q", i+1, line)
		}
	}
}

// TestComponentsOfThisBinary reads the licenses of this test binary's own
// modules from the module cache, as the package build does for sallyport.
func TestComponentsOfThisBinary(t *testing.T) {
	goroot, modcache, err := goEnv()
	if err != nil {
		t.Skipf("go env: %v", err)
	}
	comps, err := components(os.Args[0], goroot, modcache)
	if err != nil {
		t.Fatal(err)
	}
	if comps[0].files != "go/*" || comps[0].license != "BSD-3-clause" || len(comps) < 5 {
		t.Errorf("components: %d, first %+v", len(comps), comps[0])
	}
	if _, err := components(filepath.Join(t.TempDir(), "none"), goroot, modcache); err == nil {
		t.Error("components of a missing binary succeeded")
	}
}

// TestChangelog: Debian's changelog format for a native package: the
// header with the version, the items, the trailer with two spaces before
// an RFC 2822 date, no line over 80 columns (lintian's limit), and gzip
// output that depends on the content only.
func TestChangelog(t *testing.T) {
	h := history{since: "v1.2.0", date: time.Date(2026, 12, 7, 18, 57, 13, 0, time.UTC), subjects: []string{
		"short one",
		"server check, as root on the unit's config, reads the files again as the unit's user and names the fix, and then some more words to wrap twice over",
	}}
	c := changelogFile("1.2.0+git1", maintainer, h)
	if !strings.HasPrefix(c, "sallyport (1.2.0+git1) unstable; urgency=medium\n\n  * Changes since v1.2.0, newest first:\n    - short one\n    - server check,") {
		t.Errorf("header:\n%s", c)
	}
	if !strings.HasSuffix(c, "\n -- "+maintainer+"  Mon, 07 Dec 2026 18:57:13 +0000\n") {
		t.Errorf("trailer:\n%s", c)
	}
	for _, l := range strings.Split(c, "\n") {
		if len(l) > 80 && !strings.HasPrefix(l, " -- ") { // the trailer is exempt
			t.Errorf("line over 80 columns (lintian: debian-changelog-line-too-long): %q", l)
		}
	}
	if !strings.Contains(changelogFile("1", maintainer, history{date: h.date}), "  * Built from a source tree without git history") {
		t.Error("no plain entry without history")
	}
	a, err := gzipped([]byte(c))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := gzipped([]byte(c))
	if !bytes.Equal(a, b) {
		t.Error("gzip output differs between two runs")
	}
	zr, err := gzip.NewReader(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	if zr.Name != "" || !zr.ModTime.IsZero() {
		t.Errorf("gzip header carries name %q / time %v", zr.Name, zr.ModTime)
	}
	if back, _ := io.ReadAll(zr); string(back) != c {
		t.Error("gzip round trip")
	}
}

func TestVersionLess(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{{"", "2.2.5", true}, {"2.2.5", "2.34", true}, {"2.34", "2.4", false}, {"2.3.4", "2.3.4", false}, {"2.14", "2.3.4", false}} {
		if got := versionLess(tt.a, tt.b); got != tt.want {
			t.Errorf("versionLess(%q, %q) = %v", tt.a, tt.b, got)
		}
	}
}

// TestBinaryDepends: a dynamically linked binary depends on the libc its
// newest GLIBC_ symbol version needs, on both formats.
func TestBinaryDepends(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("ELF only")
	}
	sh := "/bin/sh" // dynamically linked against glibc on every Linux this builds on
	v, err := glibcVersion(sh)
	if err != nil || v == "" {
		t.Skipf("%s has no GLIBC_ versions here (%v)", sh, err)
	}
	deb, err := binaryDepends(sh, "deb")
	if err != nil || strings.Join(deb, ",") != "passwd,libc6 (>= "+v+")" {
		t.Errorf("deb depends %q %v", deb, err)
	}
	rpm, _ := binaryDepends(sh, "rpm")
	if strings.Join(rpm, ",") != "shadow-utils,glibc >= "+v {
		t.Errorf("rpm depends %q", rpm)
	}
}
