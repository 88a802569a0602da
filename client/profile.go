package client

// Writing a renewed identity into the profile (renew.go). The bundle `pki
// bundle` writes stays one file: the [tls] values that change (cert_pem,
// the key's setting, ca_pem) are replaced in place, every other line and
// comment of the file is kept, and the result is loaded back and compared
// before it atomically replaces the file. A profile this cannot rewrite
// exactly is left alone (the renewal then lives until the client stops).

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/internal/tomlconf"
)

// rewriteTLS returns data with each key of set, inside the [tls] table,
// given its new string value: an existing assignment is replaced whole
// (single-line or multi-line string), a missing one is added after the
// table's header. Values with newlines are written as multi-line basic
// strings. It refuses a file without a [tls] table, and a value it
// cannot delimit (not a string).
func rewriteTLS(data []byte, set map[string]string) ([]byte, error) {
	lines := strings.SplitAfter(string(data), "\n")
	start, end := -1, len(lines)
	for i, l := range lines {
		h := tableHeader(l)
		if h == "" {
			continue
		}
		if start >= 0 {
			end = i
			break
		}
		if h == "tls" {
			start = i
		}
	}
	if start < 0 {
		return nil, errors.New("no [tls] table in the profile")
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	body := lines[start+1 : end]
	for _, k := range keys {
		i, n, err := findAssignment(body, k)
		if err != nil {
			return nil, err
		}
		repl := k + " = " + tomlValue(set[k]) + "\n"
		if i < 0 {
			body = append([]string{repl}, body...)
			continue
		}
		body = append(append(append([]string{}, body[:i]...), repl), body[i+n:]...)
	}
	var b strings.Builder
	for _, l := range lines[:start+1] {
		b.WriteString(l)
	}
	if !strings.HasSuffix(lines[start], "\n") {
		b.WriteString("\n")
	}
	for _, l := range body {
		b.WriteString(l)
	}
	for _, l := range lines[end:] {
		b.WriteString(l)
	}
	return []byte(b.String()), nil
}

// tableHeader is the table name of a "[name]" or "[[name]]" header line,
// or "".
func tableHeader(line string) string {
	t := strings.TrimSpace(line)
	if i := strings.Index(t, "#"); i >= 0 && !strings.Contains(t[:i], `"`) {
		t = strings.TrimSpace(t[:i])
	}
	if !strings.HasPrefix(t, "[") || !strings.HasSuffix(t, "]") {
		return ""
	}
	t = strings.Trim(t, "[]")
	return strings.TrimSpace(t)
}

// findAssignment finds "key = value" among lines (a table's body) and
// returns its first line and how many lines the value spans; -1 when the
// key is not assigned.
func findAssignment(lines []string, key string) (first, n int, err error) {
	for i, l := range lines {
		t := strings.TrimLeft(l, " \t")
		rest, ok := strings.CutPrefix(t, key)
		if !ok {
			continue
		}
		rest = strings.TrimLeft(rest, " \t")
		if !strings.HasPrefix(rest, "=") {
			continue
		}
		v := strings.TrimLeft(rest[1:], " \t")
		for _, q := range []string{`"""`, `'''`} {
			if !strings.HasPrefix(v, q) {
				continue
			}
			// The closing delimiter, on this line or a later one.
			tail := v[len(q):]
			for j := i; j < len(lines); j++ {
				if j > i {
					tail = lines[j]
				}
				if strings.Contains(tail, q) {
					return i, j - i + 1, nil
				}
			}
			return 0, 0, fmt.Errorf("key %q in [tls]: its multi-line string does not end", key)
		}
		if strings.HasPrefix(v, `"`) || strings.HasPrefix(v, `'`) {
			return i, 1, nil
		}
		return 0, 0, fmt.Errorf("key %q in [tls] is not a string", key)
	}
	return -1, 0, nil
}

// tomlValue quotes s as a TOML string: a multi-line basic string for a
// value with newlines (PEM), a basic string otherwise.
func tomlValue(s string) string {
	if strings.Contains(s, "\n") {
		s = strings.ReplaceAll(s, "\r", "")
		s = strings.ReplaceAll(s, `\`, `\\`)
		s = strings.ReplaceAll(s, `"`, `\"`)
		if !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		return `"""` + "\n" + s + `"""`
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\t", `\t`)
	return `"` + r.Replace(s) + `"`
}

// writeProfile replaces the [tls] values of set in the profile at path,
// checks that the file then loads with exactly those values, and replaces
// it atomically with its mode kept.
func writeProfile(path string, set map[string]string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("profile %s: %w", path, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("profile %s: %w", path, err)
	}
	out, err := rewriteTLS(data, set)
	if err != nil {
		return fmt.Errorf("profile %s: %w", path, err)
	}
	var check Config
	if err := tomlconf.Decode(path, string(out), &check); err != nil {
		return fmt.Errorf("profile %s: the rewritten file does not load: %w", path, err)
	}
	for k, v := range set {
		if got, ok := tlsValue(&check.TLS, k); !ok || strings.TrimSpace(got) != strings.TrimSpace(v) {
			return fmt.Errorf("profile %s: the rewritten file does not hold the new %s", path, k)
		}
	}
	if bytes.Equal(out, data) {
		return nil
	}
	return atomicfile.Write(path, out, fi.Mode().Perm())
}

// keySettings are the [tls] settings naming the device key in the
// profile, by their TOML names (none for a key file, tls.key).
func (t *TLSConfig) keySettings() map[string]string {
	out := map[string]string{}
	for _, k := range []string{"key_pem", "key_tpm", "key_pkcs11"} {
		if v, _ := tlsValue(t, k); v != "" {
			out[k] = v
		}
	}
	return out
}

// tlsValue is the value of a [tls] key by its TOML name.
func tlsValue(t *TLSConfig, key string) (string, bool) {
	switch key {
	case "ca_pem":
		return t.CAPEM, true
	case "cert_pem":
		return t.CertPEM, true
	case "key_pem":
		return t.KeyPEM, true
	case "key_tpm":
		return t.KeyTPM, true
	case "key_pkcs11":
		return t.KeyPKCS11, true
	}
	return "", false
}
