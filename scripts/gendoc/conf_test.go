package main

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// TestConfigsMatchStructs: the annotated examples (the source of the
// section 5 pages) and the structs the configs load into list the same
// keys: a key added to the code without its documentation, or documented
// under a name the loader does not know, fails here. Every gateway key says
// whether a reload applies it.
func TestConfigsMatchStructs(t *testing.T) {
	for _, c := range confPages {
		t.Run(c.example, func(t *testing.T) {
			a, err := loadAnnotated("../../configs", c.example, c.config, c.load)
			if err != nil {
				t.Fatal(err)
			}
			documented := map[string]bool{}
			for _, k := range a.keys() {
				id := k.name
				if k.table != "" {
					id = k.table + "." + k.name
				}
				documented[id] = true
				if len(k.doc) == 0 {
					t.Errorf("%s: key %s has no comment", c.example, id)
				}
				if c.example == "server.toml" && k.when == "" {
					t.Errorf("%s: key %s says neither [reload] nor [restart]", c.example, id)
				}
			}
			var missing, unknown []string
			for id := range schema(c.config) {
				if !documented[id] {
					missing = append(missing, id)
				}
			}
			for id := range documented {
				if _, ok := schema(c.config)[id]; !ok {
					unknown = append(unknown, id)
				}
			}
			sort.Strings(missing)
			sort.Strings(unknown)
			if len(missing) > 0 {
				t.Errorf("configs/%s does not document %v: add each with a comment (a commented-out line if it is unset by default)", c.example, missing)
			}
			if len(unknown) > 0 {
				t.Errorf("configs/%s documents %v, which the config does not accept", c.example, unknown)
			}
			page := manPage(c.page, a, "test")
			for id := range documented {
				name := id[strings.LastIndex(id, ".")+1:]
				if !strings.Contains(page, `\fB`+roff(name)+`\fR =`) {
					t.Errorf("the man page has no entry for %s", id)
				}
			}
		})
	}
}

// TestParseAnnotated: how comments attach to keys and tables.
func TestParseAnnotated(t *testing.T) {
	a := parseAnnotated(`# demo.toml: the header.
#
# More header.

# [restart] The address.
listen = "x"
# Not a key: a = b is prose here, because "b" is not a TOML value.

[tls]
# [reload] Cert and key.
cert = "c"
key = "k"
# The CRL, optional.
# crl = "pki/crl.pem"

[renewal]
# The renewal table. All [reload].
#
# The issuer's files.
# issuer_cert = "i.crt"

# The policies. [reload]
[[policy]]
# Its name.
name = "a"
allow = []

[[policy]]
name = "b"
`)
	if strings.Join(a.header, "|") != "demo.toml: the header.||More header." {
		t.Errorf("header %q", a.header)
	}
	got := map[string]*confKey{}
	var order []string
	for _, k := range a.keys() {
		id := k.table + "." + k.name
		got[id] = k
		order = append(order, id)
	}
	want := []string{".listen", "tls.cert", "tls.key", "tls.crl", "renewal.issuer_cert", "policy.name", "policy.allow"}
	if !slices.Equal(order, want) {
		t.Fatalf("keys %v, want %v", order, want)
	}
	for id, w := range map[string]struct {
		when, doc string
		commented bool
	}{
		".listen":             {"restart", "[restart] The address.", false},
		"tls.cert":            {"reload", "[reload] Cert and key.", false},
		"tls.key":             {"reload", "[reload] Cert and key.", false},
		"tls.crl":             {"", "The CRL, optional.", true},
		"renewal.issuer_cert": {"reload", "The issuer's files.", true},
		"policy.name":         {"reload", "Its name.", false},
		"policy.allow":        {"reload", "Its name.", false},
	} {
		k := got[id]
		if k.when != w.when || strings.Join(k.doc, " ") != w.doc || k.commented != w.commented {
			t.Errorf("%s: when %q doc %q commented %v; want %q %q %v", id, k.when, k.doc, k.commented, w.when, w.doc, w.commented)
		}
	}
	for _, tb := range a.tables {
		if tb.name == "renewal" && strings.Join(tb.doc, " ") != "The renewal table. All [reload]. " {
			t.Errorf("renewal table doc %q", tb.doc)
		}
		if tb.name == "policy" && (!tb.array || strings.Join(tb.doc, " ") != "The policies. [reload]") {
			t.Errorf("policy table %+v", tb)
		}
	}
}

// TestConfPagesWritten: make man writes both section 5 pages.
func TestConfPagesWritten(t *testing.T) {
	dir := t.TempDir()
	if err := genConfPages(dir, "../../configs", "2.0"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sallyport-server.toml.5", "sallyport-client.toml.5"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !strings.HasPrefix(string(b), ".nh\n.TH \""+strings.ToUpper(strings.TrimSuffix(name, ".5"))+"\" \"5\"") || !strings.Contains(string(b), "sallyport 2.0") {
			t.Errorf("%s: %v\n%.200s", name, err, b)
		}
	}
}
