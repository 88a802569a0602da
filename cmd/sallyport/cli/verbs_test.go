package cli

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/client"
	"github.com/sallyport/sallyport/server"
)

// A printf verb reaches a user when a string that holds one is passed as a
// value instead of as the format: "open TUN sp%d" came from the kernel's
// name template given to an Errorf as %s. go vet checks formats, not
// values, so this test checks the source of the whole module (not tests):
// every string literal or constant that holds a verb must be the format of
// a printf- or scanf-style call. Anywhere else it is a value that may end
// up in a message, and it must be listed below with what keeps it out of
// messages.

// verbTemplates are the strings with a verb that are values on purpose:
// they may be compared and assigned, and passed only to the functions
// listed (never to a message).
var verbTemplates = map[string]struct {
	why   string
	calls []string
}{
	// The TUN driver hands it to the kernel; tunnel.DisplayName shows it as
	// "spN (first free)" in every message.
	`"sp%d"`: {"client.AutoDevice, the kernel's TUN name template", nil},
	`"%d"`:   {"the placeholder tunnel.DisplayName replaces", []string{"Cut"}},
	// git log's own placeholders (subject, commit time), passed to git by
	// scripts/pkg's changelog; git expands them, no message shows them.
	`"--format=%s"`:  {"git log --format (scripts/pkg/changelog.go)", []string{"git"}},
	`"--format=%ct"`: {"git log --format (scripts/pkg/changelog.go)", []string{"git"}},
}

// printfVerb matches one printf verb (not %%).
var printfVerb = regexp.MustCompile(`%[-+# 0]*(\[\d+\])?(\d+|\*)?(\.(\d+|\*)?)?(\[\d+\])?[vTtbcdoOqxXUeEfFgGsp]`)

// hasVerb reports whether s holds a printf verb outside %%.
func hasVerb(s string) bool {
	return printfVerb.MatchString(strings.ReplaceAll(s, "%%", ""))
}

// formatFuncs are the printf- and scanf-style functions (standard library
// and testing) by name, with the position of their format argument; the
// module's own (a parameter called format followed by ...any, like
// cmdutil.Usagef) are added from the source.
var formatFuncs = map[string]int{
	"Errorf": 0, "Sprintf": 0, "Printf": 0, "Scanf": 0, "Fatalf": 0, "Logf": 0, "Skipf": 0, "Panicf": 0,
	"Fprintf": 1, "Fscanf": 1, "Sscanf": 1, "Appendf": 1,
}

func TestNoFormatVerbOutsideFormats(t *testing.T) {
	root := moduleRoot(t)
	fset := token.NewFileSet()
	var files []*ast.File
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 50 {
		t.Fatalf("found only %d Go files under %s", len(files), root)
	}
	for _, f := range files {
		addFormatFuncs(f)
	}
	// Constants whose value holds a verb, by name: their uses are checked
	// like literals.
	verbConsts := map[string]string{}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, v := range vs.Values {
				if lit, ok := v.(*ast.BasicLit); ok && lit.Kind == token.STRING && i < len(vs.Names) {
					if s, err := strconv.Unquote(lit.Value); err == nil && hasVerb(s) {
						verbConsts[vs.Names[i].Name] = lit.Value
					}
				}
			}
			return true
		})
	}
	var bad []string
	for _, f := range files {
		bad = append(bad, verbValues(fset, f, verbConsts)...)
	}
	for _, b := range bad {
		t.Error(b)
	}
}

// verbValues lists the places in f where a string with a verb is used as a
// value rather than as a format.
func verbValues(fset *token.FileSet, f *ast.File, verbConsts map[string]string) []string {
	var bad []string
	var stack []ast.Node
	ast.Inspect(f, func(n ast.Node) bool {
		if n == nil {
			stack = stack[:len(stack)-1]
			return true
		}
		stack = append(stack, n)
		var text string
		switch x := n.(type) {
		case *ast.ImportSpec:
			stack = stack[:len(stack)-1] // no nil call follows a false
			return false
		case *ast.BasicLit:
			if x.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(x.Value)
			if err != nil || !hasVerb(s) {
				return true
			}
			if vs, ok := stack[len(stack)-2].(*ast.ValueSpec); ok && isConstDeclValue(vs, x) {
				return true // checked where the constant is used
			}
			text = x.Value
		case *ast.Ident:
			v, ok := verbConsts[x.Name]
			if !ok || isDeclName(stack) {
				return true
			}
			text = v
		default:
			return true
		}
		if isFormatArg(stack) {
			return true
		}
		if tmpl, ok := verbTemplates[text]; ok {
			call := callee(stack)
			if call == "" || slices.Contains(tmpl.calls, call) {
				return true
			}
			bad = append(bad, fmt.Sprintf("%s: %s (%s) is passed to %s: only %v may take it", fset.Position(n.Pos()), text, tmpl.why, call, tmpl.calls))
			return true
		}
		bad = append(bad, fset.Position(n.Pos()).String()+": "+text+" holds a format verb but is used as a value, not as a format: a message would show the verb")
		return true
	})
	return bad
}

// callee is the name of the function the expression on top of stack (or
// a selector ending in it) is an argument of, or "" when it is not one.
func callee(stack []ast.Node) string {
	i := len(stack) - 1
	expr := stack[i]
	if i > 0 {
		if sel, ok := stack[i-1].(*ast.SelectorExpr); ok && sel.Sel == expr {
			i--
			expr = sel
		}
	}
	if i == 0 {
		return ""
	}
	call, ok := stack[i-1].(*ast.CallExpr)
	if !ok || call.Fun == expr {
		return ""
	}
	switch fn := call.Fun.(type) {
	case *ast.Ident:
		return fn.Name
	case *ast.SelectorExpr:
		return fn.Sel.Name
	}
	return "a function value"
}

// isConstDeclValue reports whether lit is one of the values of vs.
func isConstDeclValue(vs *ast.ValueSpec, lit *ast.BasicLit) bool {
	for _, v := range vs.Values {
		if v == lit {
			return true
		}
	}
	return false
}

// isDeclName reports whether the identifier on top of stack is the name
// being declared (const X = ...), not a use.
func isDeclName(stack []ast.Node) bool {
	if len(stack) < 2 {
		return false
	}
	id := stack[len(stack)-1]
	if vs, ok := stack[len(stack)-2].(*ast.ValueSpec); ok {
		for _, n := range vs.Names {
			if n == id {
				return true
			}
		}
	}
	return false
}

// isFormatArg reports whether the expression on top of stack (through
// string concatenation, parentheses and a package selector) is the format
// argument of a printf- or scanf-style call.
func isFormatArg(stack []ast.Node) bool {
	i := len(stack) - 1
	expr := stack[i].(ast.Expr)
	for i--; i >= 0; i-- {
		switch p := stack[i].(type) {
		case *ast.SelectorExpr:
			if p.Sel != expr {
				return false
			}
			expr = p
			continue
		case *ast.ParenExpr:
			expr = p
			continue
		case *ast.BinaryExpr:
			if p.Op != token.ADD {
				return false
			}
			expr = p
			continue
		case *ast.CallExpr:
			name := ""
			switch fn := p.Fun.(type) {
			case *ast.Ident:
				name = fn.Name
			case *ast.SelectorExpr:
				name = fn.Sel.Name
			}
			idx, ok := formatFuncs[name]
			return ok && idx < len(p.Args) && p.Args[idx] == expr
		}
		return false
	}
	return false
}

// formatParam is the index of the format parameter of a function type: a
// string immediately followed by a variadic ...any, as in Usagef(format
// string, args ...any) or progress func(string, ...any); -1 if none.
func formatParam(ft *ast.FuncType) int {
	var types []ast.Expr
	for _, p := range ft.Params.List {
		for range max(len(p.Names), 1) {
			types = append(types, p.Type)
		}
	}
	for i := 0; i+1 < len(types); i++ {
		str, ok := types[i].(*ast.Ident)
		el, variadic := types[i+1].(*ast.Ellipsis)
		if ok && str.Name == "string" && variadic && i+2 == len(types) && isAny(el.Elt) {
			return i
		}
	}
	return -1
}

func isAny(e ast.Expr) bool {
	if id, ok := e.(*ast.Ident); ok {
		return id.Name == "any"
	}
	it, ok := e.(*ast.InterfaceType)
	return ok && len(it.Methods.List) == 0
}

// addFormatFuncs adds the module's own printf-style functions to
// formatFuncs: declared functions and methods, function literals given a
// name, and parameters and fields of such a function type.
func addFormatFuncs(f *ast.File) {
	ast.Inspect(f, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.FuncDecl:
			if i := formatParam(x.Type); i >= 0 {
				formatFuncs[x.Name.Name] = i
			}
		case *ast.AssignStmt:
			for i, r := range x.Rhs {
				if fl, ok := r.(*ast.FuncLit); ok && i < len(x.Lhs) {
					if id, ok := x.Lhs[i].(*ast.Ident); ok {
						if j := formatParam(fl.Type); j >= 0 {
							formatFuncs[id.Name] = j
						}
					}
				}
			}
		case *ast.Field:
			if ft, ok := x.Type.(*ast.FuncType); ok {
				if j := formatParam(ft); j >= 0 {
					for _, id := range x.Names {
						formatFuncs[id.Name] = j
					}
				}
			}
		}
		return true
	})
}

// moduleRoot is the directory of the go.mod above this package.
func moduleRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// TestConfigErrorsHaveNoVerbs drives the error paths of the two config
// loaders with every key of the annotated example configs broken in four
// ways (left out, a value of the wrong type, an empty or nonsense string,
// the key misspelt) and checks that no message shows a format verb or a
// fmt error marker (%!d(string=...)).
func TestConfigErrorsHaveNoVerbs(t *testing.T) {
	root := moduleRoot(t)
	loaders := map[string]func(string) error{
		"server.toml": func(p string) error { _, err := server.LoadConfig(p); return err },
		"client.toml": func(p string) error { _, err := client.LoadConfig(p); return err },
	}
	n := 0
	for file, load := range loaders {
		b, err := os.ReadFile(filepath.Join(root, "configs", file))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		for i, l := range lines {
			key, _, ok := strings.Cut(l, "=")
			if !ok || strings.HasPrefix(strings.TrimSpace(l), "#") {
				continue
			}
			key = strings.TrimSpace(key)
			for _, repl := range []string{"", key + " = 12345", key + ` = "%d bogus %s"`, key + "x" + " = 1", key + ` = ""`, key + " = [1, 2]"} {
				edited := append(append(append([]string{}, lines[:i]...), repl), lines[i+1:]...)
				path := filepath.Join(t.TempDir(), file)
				if err := os.WriteFile(path, []byte(strings.Join(edited, "\n")), 0o600); err != nil {
					t.Fatal(err)
				}
				err := load(path)
				if err == nil {
					continue
				}
				n++
				// A value the test wrote ("%d bogus %s") may be quoted
				// back; nothing else may hold a verb.
				msg := strings.ReplaceAll(err.Error(), "%d bogus %s", "")
				if hasVerb(msg) || strings.Contains(msg, "%!") {
					t.Errorf("%s line %d as %q: the error shows a format verb: %v", file, i+1, repl, err)
				}
			}
		}
	}
	t.Logf("%d config errors checked", n)
	if n < 50 {
		t.Fatalf("only %d config errors were produced; the corpus is too small to mean anything", n)
	}
}
