package main

// The config file man pages, sallyport-server.toml(5) and
// sallyport-client.toml(5), generated from the annotated example configs
// (configs/*.toml). Those files are the one place a key is documented: its
// name and table, the value the example shows, whether a reload applies
// it ("[reload]" / "[restart]" in its comment) and what it means. The type
// of each key comes from the Go struct the config loads into, and whether
// it is required from loading the example without it. conf_test.go checks
// that the examples and the structs list the same keys, so neither can
// drift from the other, and the pages are rebuilt from them on every build.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/sallyport/sallyport/cmd/sallyport/cli"
)

// confKey is one documented key.
type confKey struct {
	table     string // "" for top-level keys, else "tls", "policy", ...
	name      string
	value     string // the value as the example writes it
	commented bool   // the example leaves it unset (#key = value)
	doc       []string
	when      string // "reload", "restart", "reload: ..." or ""
	typ       string
	required  bool
}

// confTable is one table of the file in the order the example has them.
type confTable struct {
	name  string
	array bool // [[name]]
	doc   []string
	keys  []*confKey
}

// annotated is a parsed annotated example.
type annotated struct {
	header []string // the file's opening comment
	tables []*confTable
}

func (a *annotated) keys() []*confKey {
	var out []*confKey
	for _, t := range a.tables {
		out = append(out, t.keys...)
	}
	return out
}

var (
	tableLine = regexp.MustCompile(`^#?\s*(\[\[?)([a-z_0-9]+)\]\]?\s*$`)
	keyLine   = regexp.MustCompile(`^#?\s?([a-z_0-9]+)\s*=\s*(.+)$`)
	whenTag   = regexp.MustCompile(`\[(reload|restart)(:[^\]]*)?\]`)
)

// isKeyLine reports whether line sets a key (live or commented out): the
// name, and a value TOML accepts.
func isKeyLine(line string) (name, value string, ok bool) {
	m := keyLine.FindStringSubmatch(line)
	if m == nil {
		return "", "", false
	}
	var v map[string]any
	if _, err := toml.Decode(m[1]+" = "+m[2], &v); err != nil {
		return "", "", false
	}
	return m[1], strings.TrimSpace(m[2]), true
}

// parseAnnotated reads an annotated example. A comment block (lines up to a
// blank line, a key or a table) documents the keys right after it; a block
// right before a table header, and the paragraphs of a block after a
// header but one, document the table.
func parseAnnotated(text string) *annotated {
	a := &annotated{}
	top := &confTable{}
	a.tables = append(a.tables, top)
	cur := top
	var block []string
	inHeader := true
	seen := map[string]bool{}
	var lastKeys []*confKey // keys of the current block, for a shared comment
	flush := func() { block = nil }
	for _, raw := range strings.Split(text, "\n") {
		line := strings.TrimRight(raw, " \t")
		if m := tableLine.FindStringSubmatch(line); m != nil {
			t := &confTable{name: m[2], array: m[1] == "[["}
			if prev := findTable(a, t.name); prev != nil {
				cur = prev // a second [[policy]]: its keys are documented already
			} else {
				t.doc = block
				a.tables = append(a.tables, t)
				cur = t
			}
			inHeader, lastKeys = false, nil
			flush()
			continue
		}
		if name, value, ok := isKeyLine(line); ok {
			inHeader = false
			id := cur.name + "." + name
			if seen[id] {
				flush()
				continue
			}
			seen[id] = true
			k := &confKey{table: cur.name, name: name, value: value, commented: strings.HasPrefix(line, "#")}
			if len(block) > 0 {
				if len(cur.keys) == 0 && cur.name != "" {
					// Paragraphs before the table's first key: all but
					// the last describe the table.
					paras := splitParas(block)
					if len(paras) > 1 && len(cur.doc) == 0 {
						for _, p := range paras[:len(paras)-1] {
							cur.doc = append(cur.doc, append(p, "")...)
						}
						block = paras[len(paras)-1]
					}
				}
				k.doc = block
				lastKeys = []*confKey{k}
			} else if len(lastKeys) > 0 {
				k.doc = lastKeys[0].doc // shares the comment above it
				lastKeys = append(lastKeys, k)
			}
			cur.keys = append(cur.keys, k)
			flush()
			continue
		}
		switch {
		case strings.HasPrefix(line, "#"):
			c := strings.TrimPrefix(strings.TrimPrefix(line, "#"), " ")
			if inHeader {
				a.header = append(a.header, c)
			} else {
				block = append(block, c)
			}
			lastKeys = nil
		case line == "":
			inHeader = false
			if len(block) > 0 {
				flush()
			}
			lastKeys = nil
		}
	}
	for _, t := range a.tables {
		tableWhen := whenOf(t.doc)
		for _, k := range t.keys {
			if k.when = whenOf(k.doc); k.when == "" {
				k.when = tableWhen
			}
		}
	}
	return a
}

func findTable(a *annotated, name string) *confTable {
	for _, t := range a.tables {
		if t.name == name && name != "" {
			return t
		}
	}
	return nil
}

// splitParas splits comment lines at empty lines.
func splitParas(lines []string) [][]string {
	var out [][]string
	var cur []string
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			if len(cur) > 0 {
				out = append(out, cur)
			}
			cur = nil
			continue
		}
		cur = append(cur, l)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// whenOf is the first [reload...] or [restart] tag of doc.
func whenOf(doc []string) string {
	m := whenTag.FindStringSubmatch(strings.Join(doc, " "))
	if m == nil {
		return ""
	}
	return m[1] + m[2]
}

// schema maps "table.key" to a type name for every key the struct v (a
// config, by value) accepts, following toml tags into nested tables and
// arrays of tables.
func schema(v any) map[string]string {
	out := map[string]string{}
	var walk func(t reflect.Type, table string)
	walk = func(t reflect.Type, table string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("toml"), ",")[0]
			if tag == "" || tag == "-" || !f.IsExported() {
				continue
			}
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			switch {
			case ft.Kind() == reflect.Struct && ft != reflect.TypeOf(time.Duration(0)) && table == "":
				walk(ft, tag)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct && table == "":
				walk(ft.Elem(), tag)
			default:
				key := tag
				if table != "" {
					key = table + "." + tag
				}
				out[key] = typeName(ft)
			}
		}
	}
	walk(reflect.TypeOf(v), "")
	return out
}

func typeName(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return "duration"
	case t.Kind() == reflect.String:
		return "string"
	case t.Kind() == reflect.Bool:
		return "boolean"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "number"
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		return "array of strings"
	case t.Kind() == reflect.Struct || t.Kind() == reflect.Map:
		return "table"
	}
	return t.String()
}

// markRequired loads the example once without each live top-level or
// single-table key; a key whose absence the loader refuses is required.
func markRequired(a *annotated, text string, load func(path string) error) error {
	dir, err := os.MkdirTemp("", "gendoc-conf-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "example.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		return err
	}
	if err := load(path); err != nil {
		return fmt.Errorf("the example itself does not load: %w", err)
	}
	for _, t := range a.tables {
		if t.array {
			continue
		}
		for _, k := range t.keys {
			if k.commented {
				continue
			}
			without := dropKey(text, t.name, k.name)
			if err := os.WriteFile(path, []byte(without), 0o600); err != nil {
				return err
			}
			full := k.name
			if t.name != "" {
				full = t.name + "." + k.name
			}
			if err := load(path); err != nil && strings.Contains(err.Error(), full) && strings.Contains(err.Error(), "required") {
				k.required = true
			}
		}
	}
	return nil
}

// dropKey removes the live line of key from table in text.
func dropKey(text, table, key string) string {
	var out []string
	cur := ""
	for _, line := range strings.Split(text, "\n") {
		if m := tableLine.FindStringSubmatch(line); m != nil && !strings.HasPrefix(line, "#") {
			cur = m[2]
		}
		if name, _, ok := isKeyLine(line); ok && !strings.HasPrefix(line, "#") && cur == table && name == key {
			continue
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// confPages are the section 5 pages: the example each is made from, its
// struct and its loader.
var confPages = []struct {
	page    confPage
	example string
	config  any
	load    func(string) error
}{
	{page: confPage{file: "/etc/sallyport/server.toml", name: "sallyport-server.toml", summary: "sallyport gateway configuration",
		installed: "/usr/share/doc/sallyport/examples/server.toml",
		seeAlso:   []string{"sallyport-server(1)", "sallyport-server-check(1)", "sallyport-pki(1)", "sallyport-policy(1)", "sallyport-client.toml(5)"}},
		example: "server.toml"},
	{page: confPage{file: "/etc/sallyport/PROFILE.toml", name: "sallyport-client.toml", summary: "sallyport laptop configuration (a profile)",
		installed: "/usr/share/doc/sallyport/examples/client.toml",
		seeAlso:   []string{"sallyport-up(1)", "sallyport-status(1)", "sallyport-down(1)", "sallyport-pki-bundle(1)", "sallyport-server.toml(5)"}},
		example: "client.toml"},
}

func init() {
	files := cli.ConfigFiles()
	for i := range confPages {
		f := files[confPages[i].example]
		confPages[i].config, confPages[i].load = f.Struct, f.Load
	}
}

// loadAnnotated parses the example of one page and fills in types and
// required keys.
func loadAnnotated(configs, example string, config any, load func(string) error) (*annotated, error) {
	b, err := os.ReadFile(filepath.Join(configs, example))
	if err != nil {
		return nil, err
	}
	a := parseAnnotated(string(b))
	types := schema(config)
	for _, k := range a.keys() {
		id := k.name
		if k.table != "" {
			id = k.table + "." + k.name
		}
		k.typ = types[id]
	}
	if err := markRequired(a, string(b), load); err != nil {
		return nil, fmt.Errorf("%s: %w", example, err)
	}
	return a, nil
}

// genConfPages writes the section 5 pages into manDir.
func genConfPages(manDir, configs, version string) error {
	for _, c := range confPages {
		a, err := loadAnnotated(configs, c.example, c.config, c.load)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(manDir, c.page.name+".5"), []byte(manPage(c.page, a, version)), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// confPage describes one config man page.
type confPage struct {
	file, name, summary, installed string
	seeAlso                        []string
}

// roff escapes text for a man page line.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// leadingWhen is a [reload]/[restart] tag opening a key's comment: the
// page shows it in the key's attributes instead.
var leadingWhen = regexp.MustCompile(`^\s*\[(reload|restart)(:[^\]]*)?\]\s*`)

// prose writes comment lines as filled paragraphs; indented lines are kept
// as they are.
func prose(b *bytes.Buffer, lines []string) {
	inNF := false
	for _, l := range lines {
		indented := strings.HasPrefix(l, "  ")
		switch {
		case strings.TrimSpace(l) == "":
			if inNF {
				b.WriteString(".fi\n")
				inNF = false
			}
			b.WriteString(".sp\n")
			continue
		case indented && !inNF:
			b.WriteString(".nf\n")
			inNF = true
		case !indented && inNF:
			b.WriteString(".fi\n")
			inNF = false
		}
		b.WriteString(roff(l) + "\n")
	}
	if inNF {
		b.WriteString(".fi\n")
	}
}

// manPage renders a config man page.
func manPage(p confPage, a *annotated, version string) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, ".nh\n.TH %q \"5\" \"\" %q \"sallyport manual\"\n", strings.ToUpper(p.name), "sallyport "+version)
	fmt.Fprintf(&b, ".SH NAME\n%s \\- %s\n", roff(p.name), roff(p.summary))
	fmt.Fprintf(&b, ".SH SYNOPSIS\n.B %s\n", roff(p.file))
	b.WriteString(".SH DESCRIPTION\n")
	prose(&b, a.header)
	fmt.Fprintf(&b, ".PP\nEach key below gives its TOML type; whether it is required, unset, or\nwhat the example sets; and, where the file says, whether a reload applies\nit or it needs a restart. The annotated example is installed as\n.IR %s .\n", roff(p.installed))
	for _, t := range a.tables {
		if len(t.keys) == 0 && len(t.doc) == 0 {
			continue
		}
		switch {
		case t.name == "":
			b.WriteString(".SH TOP-LEVEL KEYS\n")
		case t.array:
			fmt.Fprintf(&b, ".SH [[%s]]\n", roff(t.name))
		default:
			fmt.Fprintf(&b, ".SH [%s]\n", roff(t.name))
		}
		if len(t.doc) > 0 {
			prose(&b, t.doc)
		}
		for i, k := range t.keys {
			if len(k.name)+len(k.value) > 60 {
				// Too long for the tag line, which cannot be broken: the
				// value goes on a line of its own, unfilled.
				fmt.Fprintf(&b, ".TP\n\\fB%s\\fR =\n.nf\n%s\n.fi\n", roff(k.name), roff(k.value))
			} else {
				fmt.Fprintf(&b, ".TP\n\\fB%s\\fR = %s\n", roff(k.name), roff(k.value))
			}
			var attrs []string
			if k.typ != "" {
				attrs = append(attrs, k.typ)
			}
			switch {
			case k.required:
				attrs = append(attrs, "required")
			case k.commented:
				attrs = append(attrs, "unset in the example")
			default:
				attrs = append(attrs, "as the example sets it")
			}
			switch {
			case strings.HasPrefix(k.when, "reload"):
				attrs = append(attrs, "applied on reload"+strings.TrimPrefix(k.when, "reload"))
			case k.when == "restart":
				attrs = append(attrs, "needs a restart")
			}
			fmt.Fprintf(&b, "(%s)\n.br\n", roff(strings.Join(attrs, "; ")))
			if i > 0 && len(k.doc) > 0 && sameDoc(t.keys[i-1].doc, k.doc) {
				j := i - 1
				for j > 0 && sameDoc(t.keys[j-1].doc, k.doc) {
					j--
				}
				fmt.Fprintf(&b, "Described with \\fB%s\\fR above.\n", roff(t.keys[j].name))
				continue
			}
			doc := append([]string(nil), k.doc...)
			if len(doc) > 0 {
				doc[0] = leadingWhen.ReplaceAllString(doc[0], "")
			}
			prose(&b, doc)
		}
	}
	fmt.Fprintf(&b, ".SH FILES\n.TP\n.I %s\nthe file\n.TP\n.I %s\nthe annotated example this page is generated from\n", roff(p.file), roff(p.installed))
	b.WriteString(".SH SEE ALSO\n" + roff(strings.Join(p.seeAlso, ", ")) + "\n")
	return b.String()
}

// sameDoc reports whether two keys share one comment (the parser gives
// them the same slice).
func sameDoc(a, b []string) bool { return len(a) > 0 && len(b) > 0 && &a[0] == &b[0] }
