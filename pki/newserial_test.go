package pki

import (
	"strings"
	"testing"
)

func TestNewSerial(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		n, err := NewSerial(nil)
		if err != nil {
			t.Fatal(err)
		}
		s := FormatSerial(n)
		if n.BitLen() != 129 || !strings.ContainsAny(s, "abcdef") || seen[s] {
			t.Fatalf("bad serial %s", s)
		}
		seen[s] = true
		back, err := ParseSerial(s)
		if err != nil || back.Cmp(n) != 0 {
			t.Fatalf("round trip %s: %v", s, err)
		}
	}
	if _, err := NewSerial(strings.NewReader("short")); err == nil {
		t.Error("short reader accepted")
	}
}
