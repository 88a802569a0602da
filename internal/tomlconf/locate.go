package tomlconf

// Where each key of a TOML text is defined. BurntSushi/toml reports the
// line of a syntax error but not where a key it did not decode (or one a
// config's own checks refuse) was written, so errors find it here: a small
// scanner that follows table headers, keys, dotted keys and inline tables,
// and skips every value (strings of all four kinds, arrays over several
// lines, comments). It only runs on text the library has already parsed,
// to put a line number on an error; it never decides what a file means.

import (
	"strconv"
	"strings"
)

// seg is one part of a key path; index is the element of an array of
// tables ([[policy]] #index, from 0), -1 elsewhere.
type seg struct {
	name  string
	index int
}

// entry is one key (or table header) of the text and its line.
type entry struct {
	path  []seg
	line  int
	table bool // a [table] or [[table]] header, not a key = value
	array bool // a [[table]] header
}

// names is the path without array indexes, dot-joined as toml.Key.String
// writes it.
func (e entry) names() string {
	parts := make([]string, len(e.path))
	for i, s := range e.path {
		parts[i] = s.name
	}
	return strings.Join(parts, ".")
}

// scanner walks a TOML text byte by byte, counting lines.
type scanner struct {
	s    string
	i    int
	line int
	out  []entry
	// arrays counts the [[x]] headers seen per path (with the indexes of
	// the tables above it), so each gets its index.
	arrays map[string]int
}

// locate lists the keys and table headers of text in order, each with the
// line it is on. Text that is not valid TOML gives a partial list, never a
// panic.
func locate(text string) []entry {
	sc := &scanner{s: text, line: 1, arrays: map[string]int{}}
	sc.document()
	return sc.out
}

func (sc *scanner) eof() bool { return sc.i >= len(sc.s) }

func (sc *scanner) peek() byte {
	if sc.eof() {
		return 0
	}
	return sc.s[sc.i]
}

// next consumes one byte (none at the end of the text).
func (sc *scanner) next() byte {
	if sc.eof() {
		return 0
	}
	c := sc.s[sc.i]
	sc.i++
	if c == '\n' {
		sc.line++
	}
	return c
}

// blank skips spaces and tabs, and newlines and comments when lines is set.
func (sc *scanner) blank(lines bool) {
	for !sc.eof() {
		switch c := sc.peek(); {
		case c == ' ' || c == '\t' || c == '\r':
			sc.next()
		case c == '\n' && lines:
			sc.next()
		case c == '#':
			for !sc.eof() && sc.peek() != '\n' {
				sc.next()
			}
		default:
			return
		}
	}
}

// skipLine skips to the start of the next line.
func (sc *scanner) skipLine() {
	for !sc.eof() && sc.peek() != '\n' {
		sc.next()
	}
	if !sc.eof() {
		sc.next()
	}
}

func (sc *scanner) document() {
	var table []seg
	for {
		sc.blank(true)
		if sc.eof() {
			return
		}
		line := sc.line
		if sc.peek() == '[' {
			sc.next()
			array := sc.peek() == '['
			if array {
				sc.next()
			}
			keys := sc.key()
			if keys == nil {
				sc.skipLine()
				continue
			}
			table = make([]seg, 0, len(table)+len(keys))
			for _, k := range keys {
				table = append(table, seg{name: k, index: -1})
			}
			if array {
				id := pathID(table)
				table[len(table)-1].index = sc.arrays[id]
				sc.arrays[id]++
			}
			sc.out = append(sc.out, entry{path: table, line: line, table: true, array: array})
			sc.skipLine()
			continue
		}
		if !sc.keyValue(table) {
			sc.skipLine()
		}
	}
}

// pathID names a header path, the indexes of the arrays above it included
// (the [[b]] under the first [[a]] and under the second are counted apart).
func pathID(p []seg) string {
	var b strings.Builder
	for _, s := range p {
		b.WriteString(s.name)
		b.WriteByte(0)
		b.WriteString(strconv.Itoa(s.index))
		b.WriteByte(0)
	}
	return b.String()
}

// keyValue reads "key = value" under prefix, recording the key (and the
// keys of an inline table value). It reports false when no key starts here.
func (sc *scanner) keyValue(prefix []seg) bool {
	line := sc.line
	keys := sc.key()
	if keys == nil {
		return false
	}
	sc.blank(false)
	if sc.peek() != '=' {
		return false
	}
	sc.next()
	path := append(append([]seg(nil), prefix...), segs(keys)...)
	sc.out = append(sc.out, entry{path: path, line: line})
	sc.blank(false)
	sc.value(path)
	return true
}

func segs(keys []string) []seg {
	out := make([]seg, len(keys))
	for i, k := range keys {
		out[i] = seg{name: k, index: -1}
	}
	return out
}

// key reads a dotted key of bare and quoted parts, nil if there is none.
func (sc *scanner) key() []string {
	var parts []string
	for {
		sc.blank(false)
		var part string
		switch c := sc.peek(); {
		case c == '"' || c == '\'':
			part = sc.quoted()
		case isBare(c):
			start := sc.i
			for !sc.eof() && isBare(sc.peek()) {
				sc.next()
			}
			part = sc.s[start:sc.i]
		default:
			return nil
		}
		parts = append(parts, part)
		sc.blank(false)
		if sc.peek() != '.' {
			return parts
		}
		sc.next()
	}
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// quoted reads a one-line basic ("...") or literal ('...') string and
// returns its text (escapes are kept as written: keys rarely have any).
func (sc *scanner) quoted() string {
	q := sc.next()
	start := sc.i
	for !sc.eof() && sc.peek() != q && sc.peek() != '\n' {
		if q == '"' && sc.peek() == '\\' {
			sc.next()
			if sc.eof() {
				break
			}
		}
		sc.next()
	}
	end := sc.i
	if !sc.eof() && sc.peek() == q {
		sc.next()
	}
	return sc.s[start:end]
}

// value skips one value; the keys of an inline table are recorded under
// path.
func (sc *scanner) value(path []seg) {
	switch c := sc.peek(); c {
	case '"', '\'':
		if strings.HasPrefix(sc.s[sc.i:], string([]byte{c, c, c})) {
			sc.multiline(c)
			return
		}
		sc.quoted()
	case '[':
		sc.next()
		for {
			sc.blank(true)
			if sc.eof() {
				return
			}
			if sc.peek() == ']' {
				sc.next()
				return
			}
			if sc.peek() == ',' {
				sc.next()
				continue
			}
			before := sc.i
			sc.value(path)
			if sc.i == before {
				sc.next() // not a value: step over it
			}
		}
	case '{':
		sc.next()
		for {
			sc.blank(true)
			if sc.eof() {
				return
			}
			switch sc.peek() {
			case '}':
				sc.next()
				return
			case ',':
				sc.next()
				continue
			}
			if !sc.keyValue(path) {
				sc.next()
			}
		}
	default:
		// A number, date, boolean: up to the end of the value.
		for !sc.eof() {
			switch sc.peek() {
			case ',', ']', '}', '\n', '#':
				return
			}
			sc.next()
		}
	}
}

// multiline skips a """...""" or ”'...”' string.
func (sc *scanner) multiline(q byte) {
	sc.i += 3
	close := string([]byte{q, q, q})
	for !sc.eof() {
		if q == '"' && sc.peek() == '\\' {
			sc.next()
			if !sc.eof() {
				sc.next()
			}
			continue
		}
		if strings.HasPrefix(sc.s[sc.i:], close) {
			sc.i += 3
			// Up to two more quotes belong to the string ("""a""""").
			for n := 0; n < 2 && sc.peek() == q; n++ {
				sc.next()
			}
			return
		}
		sc.next()
	}
}
