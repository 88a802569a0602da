package archtest

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/sallyport/sallyport/"

// pkgInfo is one package as go list sees it: ours only, without the module
// prefix. A test variant ("server [server.test]", "server_test") is listed
// under its package with test set.
type pkgInfo struct {
	path    string
	test    bool
	imports []string // direct imports of ours
	deps    []string // every package of ours it links
}

// list runs go list -test -deps over the module.
func list(t *testing.T) []pkgInfo {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list package imports: %v", err)
	}
	cmd := exec.Command(goBin, "list", "-test", "-f", "{{.ImportPath}}|{{join .Imports \",\"}}|{{join .Deps \",\"}}", mod+"...")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	ours := func(list string) []string {
		var r []string
		for _, p := range strings.Split(list, ",") {
			p, _, _ = strings.Cut(p, " ")
			if rest, ok := strings.CutPrefix(p, mod); ok {
				r = append(r, strings.TrimSuffix(rest, "_test"))
			}
		}
		return r
	}
	var pkgs []pkgInfo
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.SplitN(line, "|", 3)
		if len(f) != 3 || strings.HasSuffix(f[0], ".test") {
			continue // the generated test main
		}
		path, variant, _ := strings.Cut(f[0], " ")
		test := variant != "" || strings.HasSuffix(path, "_test")
		path = strings.TrimSuffix(strings.TrimPrefix(path, mod), "_test")
		pkgs = append(pkgs, pkgInfo{path: path, test: test, imports: ours(f[1]), deps: ours(f[2])})
	}
	if len(pkgs) < 30 {
		t.Fatalf("go list listed only %d packages; the rules would prove nothing", len(pkgs))
	}
	return pkgs
}

func under(p, root string) bool { return p == root || strings.HasPrefix(p, root+"/") }

func anyUnder(ps []string, root string) string {
	for _, p := range ps {
		if under(p, root) {
			return p
		}
	}
	return ""
}

// TestImportRules checks every import rule of ARCHITECTURE.md ("Parts and
// who may import whom").
func TestImportRules(t *testing.T) {
	pkgs := list(t)
	onlyImports := func(p pkgInfo, allowed ...string) {
		for _, imp := range p.imports {
			if imp == p.path || slices.ContainsFunc(allowed, func(a string) bool { return under(imp, a) }) {
				continue
			}
			t.Errorf("%s imports %s; it may import only %v of ours", p.path, imp, allowed)
		}
	}
	seen := map[string]bool{}
	for _, p := range pkgs {
		seen[p.path] = true
		if p.test {
			// Tests may use what they need (pki/ca to make certificates,
			// testenv, ...); the rules are about what the binaries link.
			// Except: the two halves do not even test against each other.
			if under(p.path, "server") && anyUnder(p.deps, "client") != "" {
				t.Errorf("%s (test) links %s: server and client never import each other", p.path, anyUnder(p.deps, "client"))
			}
			if under(p.path, "client") && anyUnder(p.deps, "server") != "" {
				t.Errorf("%s (test) links %s: server and client never import each other", p.path, anyUnder(p.deps, "server"))
			}
			continue
		}
		switch {
		case p.path == "pki":
			onlyImports(p, "internal/userfile")
		case p.path == "internal/userfile":
			onlyImports(p)
		case p.path == "pki/ca":
			onlyImports(p, "pki", "internal/atomicfile")
		case p.path == "pki/hwkey":
			onlyImports(p, "pki", "internal/userfile")
		case p.path == "pki/renew":
			onlyImports(p, "pki")
		case under(p.path, "tunnel"):
			onlyImports(p, "tunnel")
		case under(p.path, "internal"):
			// Shared helpers: the gateway and the laptop both link them,
			// so they lean on neither.
			onlyImports(p, "internal")
		}
		if under(p.path, "server") {
			if c := anyUnder(p.deps, "client"); c != "" {
				t.Errorf("%s links %s: server never imports client", p.path, c)
			}
		}
		if under(p.path, "client") {
			if s := anyUnder(p.deps, "server"); s != "" {
				t.Errorf("%s links %s: client never imports server", p.path, s)
			}
		}
		if p.path != "cmd/sallyport/cli" && anyUnder(p.imports, "server") != "" && anyUnder(p.imports, "client") != "" {
			t.Errorf("%s imports both server and client: only cmd/sallyport/cli may", p.path)
		}
		if slices.Contains(p.imports, "pki/hwkey/hwtest") {
			t.Errorf("%s imports pki/hwkey/hwtest, which is for tests only", p.path)
		}
		if slices.Contains(p.imports, "pki/ca") && !slices.Contains([]string{"pki/pkicmd", "bench/scale", "scripts/demohelper"}, p.path) {
			t.Errorf("%s imports pki/ca: only pki/pkicmd, bench/scale, scripts/demohelper and tests may", p.path)
		}
		runTime := under(p.path, "client") || under(p.path, "tunnel") || under(p.path, "internal") || p.path == "pki" || under(p.path, "pki/hwkey")
		if runTime && slices.Contains(p.deps, "pki/renew") {
			t.Errorf("%s links pki/renew: of the run-time packages only server may", p.path)
		}
	}
	for _, must := range []string{"server", "client", "tunnel", "tunnel/packet", "pki", "pki/ca", "cmd/sallyport/cli", "internal/metricsrv"} {
		if !seen[must] {
			t.Errorf("go list did not list %s: the rules were not checked for it", must)
		}
	}
}
