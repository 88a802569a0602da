package tomlconf

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/sallyport/sallyport/internal/userfile"
)

// Error is a config error at a place in a file: it prints as
// "FILE:LINE: MESSAGE", the form compilers use and editors jump to
// ("config FILE: MESSAGE" when the line is not known).
type Error struct {
	File string
	Line int // 0: not known
	Msg  string
	Err  error // what it wraps, if anything
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("config %s: %s", e.File, e.Msg)
}

func (e *Error) Unwrap() error { return e.Err }

// errorList is several config errors, one line each, shown as one.
type errorList []*Error

func (l errorList) Error() string {
	s := make([]string, len(l))
	for i, e := range l {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

func (l errorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

// typeErr is BurntSushi/toml's message for a value of the wrong type.
var typeErr = regexp.MustCompile(`^toml: (?:line (\d+) )?\(last key "([^"]*)"\): incompatible types: TOML value has type (\S+); destination has type (\S+)$`)

// decodeError turns an error of toml.Decode into an Error at its line.
func decodeError(name string, err error) error {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.LastKey != "" {
			msg = fmt.Sprintf("key %q: %s", pe.LastKey, pe.Message)
		}
		return &Error{File: name, Line: pe.Position.Line, Msg: msg, Err: err}
	}
	if m := typeErr.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: name, Line: line, Msg: fmt.Sprintf("key %q: %s is needed here, not %s", m[2], kind(m[4]), kind(m[3])), Err: err}
	}
	return &Error{File: name, Msg: err.Error(), Err: err}
}

// kind names a TOML or Go type as a person writes the value.
func kind(t string) string {
	switch {
	case t == "string" || t == "time.Duration":
		return `a string ("...")`
	case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint") || strings.HasPrefix(t, "float"):
		return "a number"
	case t == "bool" || t == "*bool":
		return "true or false"
	case strings.HasPrefix(t, "[]") || strings.HasPrefix(t, "[]interface"):
		return "a list ([...])"
	case strings.HasPrefix(t, "map[") || strings.Contains(t, "struct"):
		return "a table"
	}
	return t
}

// unknownKeys is the error for keys the config does not declare: each at
// its line, a misspelt table once (not each key under it), a key in an
// array of tables with the element's number and name, and the nearest
// known key as a suggestion.
func unknownKeys(name, text string, und []toml.Key, t reflect.Type, raw map[string]any) error {
	entries := locate(text)
	seen := map[string]int{} // occurrences of each key so far
	var errs errorList
	for _, k := range und {
		ks := k.String()
		n := seen[ks]
		seen[ks]++
		if underUnknown(k, und) {
			continue // [tunel] is reported, not every key below it
		}
		e, ok := nth(entries, ks, n)
		msg := unknownMessage(k, e, ok, t, raw)
		errs = append(errs, &Error{File: name, Line: e.line, Msg: msg})
		if len(errs) == 5 {
			break
		}
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errs
}

// underUnknown reports whether an ancestor of k is also unknown.
func underUnknown(k toml.Key, und []toml.Key) bool {
	for _, u := range und {
		if len(u) < len(k) && slices.Equal(u, k[:len(u)]) {
			return true
		}
	}
	return false
}

// nth is the n-th entry (from 0) whose path is key, or else the first one
// under it (a table made by a dotted key has no line of its own).
func nth(entries []entry, key string, n int) (entry, bool) {
	for _, e := range entries {
		if e.names() == key {
			if n == 0 {
				return e, true
			}
			n--
		}
	}
	for _, e := range entries {
		if strings.HasPrefix(e.names(), key+".") {
			return e, true
		}
	}
	return entry{}, false
}

func unknownMessage(k toml.Key, e entry, located bool, t reflect.Type, raw map[string]any) string {
	// Within an element of an array of tables, say which one and name the
	// key relative to it: [[policy]] #2 "eng": unknown key "alow".
	where, rel := "", k
	if located {
		for i := len(e.path) - 1; i >= 0; i-- {
			if s := e.path[i]; s.index >= 0 && i < len(e.path)-1 {
				where = fmt.Sprintf("[[%s]] #%d%s: ", k[:i+1].String(), s.index+1, elementName(raw, e.path[:i+1]))
				rel = k[i+1:]
				break
			}
		}
	}
	parent := fieldType(t, k[:len(k)-1])
	last := k[len(k)-1]
	what := fmt.Sprintf("key %q", rel.String())
	if located && e.table && e.names() == k.String() {
		what = "table [" + k.String() + "]"
		if e.array {
			what = "table [[" + k.String() + "]]"
		}
	}
	msg := where + "unknown " + what
	if s := nearest(last, fieldNames(parent)); s != "" {
		if strings.HasPrefix(what, "table [[") {
			return msg + fmt.Sprintf(" (did you mean [[%s]]?)", strings.Join(append(slices.Clone(k[:len(k)-1]), s), "."))
		}
		if strings.HasPrefix(what, "table [") {
			return msg + fmt.Sprintf(" (did you mean [%s]?)", strings.Join(append(slices.Clone(k[:len(k)-1]), s), "."))
		}
		return msg + fmt.Sprintf(" (did you mean %q?)", s)
	}
	if elsewhere := findKey(t, last, nil); len(elsewhere) > 0 && len(elsewhere) <= 3 {
		return msg + fmt.Sprintf(" (%q belongs in [%s])", last, strings.Join(elsewhere, "], ["))
	}
	if len(k) == 1 {
		return msg + " (top-level keys: " + strings.Join(fieldNames(t), ", ") + ")"
	}
	return msg
}

// elementName is ` "NAME"` for an element of an array of tables that has
// a name key, else "".
func elementName(raw map[string]any, path []seg) string {
	var cur any = raw
	for _, s := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = m[s.name]
		if s.index >= 0 {
			arr, ok := cur.([]map[string]any)
			if !ok || s.index >= len(arr) {
				return ""
			}
			cur = arr[s.index]
		}
	}
	if m, ok := cur.(map[string]any); ok {
		if n, ok := m["name"].(string); ok && n != "" {
			return fmt.Sprintf(" %q", n)
		}
	}
	return ""
}

// field is one key a struct declares: its TOML name and Go type.
type field struct {
	name string
	typ  reflect.Type
}

// fields lists the keys the struct type t (through pointers, slices and
// arrays) declares, by their toml tags or field names; nil if t is not a
// struct.
func fields(t reflect.Type) []field {
	for t != nil && (t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	var out []field
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if tag == "-" || !f.IsExported() {
			continue
		}
		if tag == "" {
			tag = f.Name
		}
		out = append(out, field{tag, f.Type})
	}
	return out
}

// fieldNames lists the TOML keys a struct type declares.
func fieldNames(t reflect.Type) []string {
	var names []string
	for _, f := range fields(t) {
		names = append(names, f.name)
	}
	return names
}

// findKey lists the tables (dot-joined paths) under t that declare key.
func findKey(t reflect.Type, key string, path []string) []string {
	if len(path) > 4 {
		return nil
	}
	var out []string
	for _, f := range fields(t) {
		if f.name == key && len(path) > 0 {
			out = append(out, strings.Join(path, "."))
		}
		out = append(out, findKey(f.typ, key, append(slices.Clone(path), f.name))...)
	}
	return out
}

// nearest is the candidate closest to s in edit distance, if it is close
// enough to be a typo: one edit for short keys, two for long ones.
func nearest(s string, candidates []string) string {
	best, bestD := "", 1<<30
	for _, c := range candidates {
		if d := distance(strings.ToLower(s), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	if bestD <= min(2, max(1, len(s)/3)) {
		return best
	}
	return ""
}

// distance is the Damerau-Levenshtein (optimal string alignment) distance:
// insertions, deletions, substitutions and swaps of neighbours.
func distance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// keyRef finds the key a config check's message is about: `key "a.b"`,
// inside `[[device]] #2: ...` when it names an element of an array of
// tables.
var (
	keyRef     = regexp.MustCompile(`\bkeys? "([^"]+)"`)
	elementRef = regexp.MustCompile(`^\[\[([^\]]+)\]\] #(\d+)\b`)
)

// Where puts err, from a config's own checks after decoding, at the line
// of the file at path where the key it names is written: "PATH:LINE:
// MSG" (an error that begins "[[device]] #2:" at that element's key, or
// at its header when it names no key). When it names no key, or the key is
// not in the file (a required one left out), it is "config PATH: MSG". err stays wrapped. The file is
// read again unless its text is given.
func Where(path string, err error, text ...string) error {
	if err == nil {
		return nil
	}
	e := &Error{File: path, Msg: err.Error(), Err: err}
	m := keyRef.FindStringSubmatch(err.Error())
	el := elementRef.FindStringSubmatch(err.Error())
	if m == nil && el == nil {
		return e
	}
	var data []byte
	if len(text) > 0 {
		data = []byte(text[0])
	} else {
		var rerr error
		if data, rerr = userfile.Read(path, userfile.MaxConfig); rerr != nil {
			return e
		}
	}
	if el != nil {
		// [[device]] #2: key "ipv4" is device.ipv4 in the second [[device]];
		// naming no key, the message is about the element as a whole.
		idx, _ := strconv.Atoi(el[2])
		key := ""
		if m != nil {
			key = m[1]
		}
		e.Line = elementLine(string(data), el[1], idx-1, key)
		return e
	}
	key := m[1]
	if en, ok := nth(locate(string(data)), key, 0); ok && en.names() == key {
		e.Line = en.line
	}
	return e
}

// WhereElement is Where for an error about key in the index-th element
// (from 0) of the array of tables [[table]], whose message does not name
// them the way Where reads: "PATH:LINE: MSG" at the line of key in that
// element, or of the element's header when key is not written there (left
// to its default, or in an inline table that has no line of its own), and
// "config PATH: MSG" when the file has no such element. err stays wrapped.
func WhereElement(path, table string, index int, key, msg string, err error) error {
	e := &Error{File: path, Msg: msg, Err: err}
	if data, rerr := userfile.Read(path, userfile.MaxConfig); rerr == nil {
		e.Line = elementLine(string(data), table, index, key)
	}
	return e
}

// elementLine is the line of key (dotted below the element: "match.ou")
// in the index-th [[table]] of text, or of that element's header when the
// key is not there; 0 when there is no such element.
func elementLine(text, table string, index int, key string) int {
	entries := locate(text)
	for _, en := range entries {
		if !en.array || en.names() != table || en.path[len(en.path)-1].index != index {
			continue
		}
		n := len(en.path)
		for _, want := range []string{table + "." + key, table + "." + strings.SplitN(key, ".", 2)[0]} {
			for _, k := range entries {
				if k.names() == want && len(k.path) > n && k.path[n-1].index == index {
					return k.line
				}
			}
		}
		return en.line
	}
	return 0
}
