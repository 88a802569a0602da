// Package archtest holds no code: its test checks the import rules of
// ARCHITECTURE.md over the whole module with `go list`, so a rule broken by
// one import line fails `go test`.
package archtest
