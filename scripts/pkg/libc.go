package main

// The package's run-time dependencies. The binary is linked against the C
// library (cgo: PKCS#11 modules are loaded with dlopen), so it needs a libc
// at least as new as the newest symbol version it references, the same
// bound dpkg-shlibdeps would compute for libc6.

import (
	"debug/elf"
	"fmt"
	"strconv"
	"strings"
)

// binaryDepends returns the package dependencies for the binary at path:
// the tools the maintainer scripts use, and the C library when it is
// dynamically linked.
func binaryDepends(path, format string) ([]string, error) {
	deps := map[string][]string{"deb": {"passwd"}, "rpm": {"shadow-utils"}}[format]
	v, err := glibcVersion(path)
	if err != nil {
		return nil, err
	}
	if v != "" {
		switch format {
		case "deb":
			deps = append(deps, "libc6 (>= "+v+")")
		case "rpm":
			deps = append(deps, "glibc >= "+v)
		}
	}
	return deps, nil
}

// glibcVersion is the newest GLIBC_x.y symbol version the binary needs
// ("" for a static binary).
func glibcVersion(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	needs, err := f.DynamicVersionNeeds()
	if err != nil || len(needs) == 0 {
		return "", nil // not dynamically linked, or no versioned symbols
	}
	best := ""
	for _, n := range needs {
		if !strings.HasPrefix(n.Name, "libc.so") {
			continue
		}
		for _, d := range n.Needs {
			v, ok := strings.CutPrefix(d.Dep, "GLIBC_")
			if ok && versionLess(best, v) {
				best = v
			}
		}
	}
	return best, nil
}

// versionLess compares dotted numeric versions ("" is the least).
func versionLess(a, b string) bool {
	if a == "" {
		return b != ""
	}
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) || i < len(pb); i++ {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}
