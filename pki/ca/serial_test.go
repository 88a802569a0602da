package ca

import (
	"strings"
	"testing"

	"github.com/sallyport/sallyport/pki"
)

func TestNewSerial(t *testing.T) {
	seen := map[string]bool{}
	for range 200 {
		n, err := NewSerial(nil)
		if err != nil {
			t.Fatal(err)
		}
		s := pki.FormatSerial(n)
		if n.BitLen() != 129 || !strings.ContainsAny(s, "abcdef") || seen[s] {
			t.Fatalf("bad serial %s", s)
		}
		seen[s] = true
		back, err := pki.ParseSerial(s)
		if err != nil || back.Cmp(n) != 0 {
			t.Fatalf("round trip %s: %v", s, err)
		}
	}
	if _, err := NewSerial(strings.NewReader("short")); err == nil {
		t.Error("short reader accepted")
	}
}
