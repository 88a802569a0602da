package ca

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"
)

// fillIndex writes an index.json with n synthetic device records, as an
// index of that size written by an older release (the store migrates it on
// first use; the index.db Init made is removed).
func fillIndex(tb testing.TB, dir, issuer string, n int) {
	tb.Helper()
	now := time.Now().UTC()
	ix := Index{Version: 1}
	for i := range n {
		s, err := NewSerial(nil)
		if err != nil {
			tb.Fatal(err)
		}
		ix.Certs = append(ix.Certs, Record{
			Serial: s.Text(16), Kind: KindDevice, Name: fmt.Sprintf("fill-%06d", i), User: "u", Groups: []string{"g"},
			Issuer: issuer, Fingerprint: fmt.Sprintf("%064x", i), NotBefore: now, NotAfter: now.AddDate(1, 0, 0), IssuedAt: now,
		})
	}
	data, err := json.Marshal(ix)
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(New(dir).Path(legacyIndex), data, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.Remove(New(dir).Path(indexDB)); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkIssue measures issuing one device certificate (ed25519, so the
// key work is cheap and the index cost shows) into a PKI that already holds
// 1,000 or 10,000 devices, each issue through a fresh PKI value as a
// "sallyport pki issue" process would.
func BenchmarkIssue(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("devices=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			if err := New(dir).Init(InitOptions{Key: KeyEd25519}); err != nil {
				b.Fatal(err)
			}
			iss, err := New(dir).IssuerCert()
			if err != nil {
				b.Fatal(err)
			}
			fillIndex(b, dir, iss.Subject.String(), n)
			if recs, err := New(dir).List(); err != nil || len(recs) != n { // migrates index.json
				b.Fatalf("list after fill: %d records, %v", len(recs), err)
			}
			b.ResetTimer()
			for i := range b.N {
				if _, err := New(dir).IssueDevice(IssueOptions{Name: fmt.Sprintf("bench-%06d", i), Key: KeyEd25519}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "issues/s")
		})
	}
}

// BenchmarkRevoke measures revoking one device by name (index update plus a
// re-signed CRL) in a PKI holding 10,000 devices, through a fresh PKI value
// each time as the CLI would.
func BenchmarkRevoke(b *testing.B) {
	dir := b.TempDir()
	if err := New(dir).Init(InitOptions{Key: KeyEd25519}); err != nil {
		b.Fatal(err)
	}
	iss, err := New(dir).IssuerCert()
	if err != nil {
		b.Fatal(err)
	}
	const n = 10000
	fillIndex(b, dir, iss.Subject.String(), n)
	if _, err := New(dir).List(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		if _, err := New(dir).Revoke("", fmt.Sprintf("fill-%06d", i%n), "", 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "revokes/s")
}
