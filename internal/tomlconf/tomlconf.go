// Package tomlconf decodes sallyport's TOML configuration files strictly:
// unknown keys are rejected by name, and every error names the file (and,
// where the parser knows it, the line and key).
package tomlconf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
)

// Load reads the TOML file at path into v and rejects any key that v does
// not declare.
func Load(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config %s: %w", path, err)
	}
	return Decode(path, string(data), v)
}

// Decode is Load for text already in memory; name is used in errors.
func Decode(name, text string, v any) error {
	md, err := toml.Decode(text, v)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			if pe.LastKey != "" {
				return fmt.Errorf("config %s: line %d: key %q: %s", name, pe.Position.Line, pe.LastKey, pe.Message)
			}
			return fmt.Errorf("config %s: line %d: %s", name, pe.Position.Line, pe.Message)
		}
		return fmt.Errorf("config %s: %w", name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = fmt.Sprintf("%q", k.String())
		}
		return fmt.Errorf("config %s: unknown key %s", name, strings.Join(keys, ", "))
	}
	return nil
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
