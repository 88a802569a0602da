// Package tomlconf decodes sallyport's TOML configuration files strictly:
// unknown keys are rejected by name, and every error names the file (and,
// where the parser knows it, the line and key).
package tomlconf

import (
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/sallyport/sallyport/internal/userfile"
)

// Load reads the TOML file at path into v and rejects any key that v does
// not declare. Errors are *Error (or several, joined): "PATH:LINE: ..."
// naming the key, with the nearest known key for one that is unknown.
func Load(path string, v any) error {
	data, err := userfile.Read(path, userfile.MaxConfig)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, userfile.Cause(err))
	}
	return Decode(path, string(data), v)
}

// Decode is Load for text already in memory; name is used in errors.
func Decode(name, text string, v any) error {
	// Durations first: a number where a duration belongs would otherwise be
	// a type error from the library, or silently nanoseconds.
	var raw map[string]any
	if md, err := toml.Decode(text, &raw); err == nil {
		if err := checkDurations(md, reflect.TypeOf(v)); err != nil {
			return Where(name, err, text)
		}
	}
	md, err := toml.Decode(text, v)
	if err != nil {
		return decodeError(name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return unknownKeys(name, text, und, reflect.TypeOf(v), raw)
	}
	if err := checkCase(md, reflect.TypeOf(v)); err != nil {
		return Where(name, err, text)
	}
	return nil
}

// checkCase refuses a key spelt in another case than the one the config
// declares: TOML keys are case-sensitive, but BurntSushi/toml matches a
// struct field case-insensitively, so "IPV4_POOL" would set ipv4_pool
// without a word (and "KEEPALIVE = 10" would slip past checkDurations as
// ten nanoseconds).
func checkCase(md toml.MetaData, t reflect.Type) error {
	for _, key := range md.Keys() {
		typ := t
		for i, part := range key {
			for typ != nil && (typ.Kind() == reflect.Pointer || typ.Kind() == reflect.Slice || typ.Kind() == reflect.Array) {
				typ = typ.Elem()
			}
			if typ == nil || typ.Kind() != reflect.Struct {
				break // a map's keys are the file's own
			}
			var next reflect.Type
			for _, f := range fields(typ) {
				if f.name == part {
					next = f.typ
					break
				}
			}
			if next == nil {
				for _, f := range fields(typ) {
					if strings.EqualFold(f.name, part) {
						return fmt.Errorf("key %q: keys are case-sensitive: write %q", toml.Key(key[:i+1]).String(), f.name)
					}
				}
				break
			}
			typ = next
		}
	}
	return nil
}

var durationType = reflect.TypeOf(time.Duration(0))

// checkDurations refuses a bare number for a time.Duration field: the TOML
// library would take `keepalive = 10` as 10 nanoseconds. A duration must be
// a string with a unit ("10s", "1m30s").
func checkDurations(md toml.MetaData, t reflect.Type) error {
	for _, key := range md.Keys() {
		typ := md.Type(key...)
		if typ != "Integer" && typ != "Float" {
			continue
		}
		if fieldType(t, key) == durationType {
			return fmt.Errorf("key %q: a duration is a string with a unit, like \"10s\" or \"2m\" (a bare number would be nanoseconds)", key.String())
		}
	}
	return nil
}

// fieldType follows a TOML key path through struct fields (by their toml
// tags or names), slices and maps, and returns the type it ends at (nil if
// it leaves the structs).
func fieldType(t reflect.Type, key toml.Key) reflect.Type {
	for _, part := range key {
		for t != nil && (t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			t = t.Elem()
		}
		if t == nil {
			return nil
		}
		switch t.Kind() {
		case reflect.Map:
			t = t.Elem()
			continue
		case reflect.Struct:
		default:
			return nil
		}
		var next reflect.Type
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			if name == "" {
				name = f.Name
			}
			if name == part || (f.Tag.Get("toml") == "" && strings.EqualFold(f.Name, part)) {
				next = f.Type
				break
			}
		}
		t = next
	}
	for t != nil && (t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
		t = t.Elem()
	}
	return t
}

// Resolve makes p relative to the directory of the config file at cfgPath,
// so configs can name their certificates next to themselves. Absolute paths
// and "" are returned unchanged.
func Resolve(cfgPath, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(cfgPath), p)
}

// Changed lists "table.key" for each exported field of the structs a and
// b (values of one config table's type) whose values differ, by the field's
// toml key: what a reload names when keys that need a restart changed.
func Changed(table string, a, b any) []string {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	var out []string
	for i := 0; i < va.NumField(); i++ {
		f := va.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if !f.IsExported() || name == "" || name == "-" {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, table+"."+name)
		}
	}
	return out
}
