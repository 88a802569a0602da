package pkicmd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/renew"
)

// TestIssuerCommand: pki issuer makes the online issuer; from then on pki
// issue gives devices 7 days unless told otherwise, and pki bundle notes a
// long-lived certificate.
func TestIssuerCommand(t *testing.T) {
	dir := newPKI(t)
	issue(t, dir, "--device", "before")
	out := mustRun(t, "issuer", "--dir", dir)
	for _, want := range []string{"made the online issuer", "renewal-issuer.crt", "renewal-issuer.key", "issuer_cert ="} {
		if !strings.Contains(out, want) {
			t.Errorf("pki issuer output lacks %q:\n%s", want, out)
		}
	}
	code, _, errs := run(t, "issue", "--dir", dir, "--device", "alice")
	if code != 0 || !strings.Contains(errs, "renew themselves: 7 days by default") {
		t.Fatalf("issue after pki issuer: %d %q", code, errs)
	}
	c := loadLeaf(t, filepath.Join(dir, "devices", "alice.crt"))[0]
	if life := c.NotAfter.Sub(c.NotBefore); life > 7*24*time.Hour+10*time.Minute || life < 7*24*time.Hour {
		t.Fatalf("device lifetime with renewal: %v, want 7 days", life)
	}

	issue(t, dir, "--device", "long", "--days", "90")
	if c := loadLeaf(t, filepath.Join(dir, "devices", "long.crt"))[0]; c.NotAfter.Sub(c.NotBefore) < 89*24*time.Hour {
		t.Fatal("--days was not obeyed with renewal")
	}
	code, _, errs = run(t, "bundle", "--dir", dir, "--device", "long", "--server", "gw:443", "-o", filepath.Join(t.TempDir(), "b.toml"))
	if code != 0 || !strings.Contains(errs, "renews itself once connected: 7 days is enough") {
		t.Fatalf("bundle of a 90-day device with renewal: %d %q", code, errs)
	}
}

// TestRotateCommand: pki rotate prints the runbook with dates; --finish
// ends it.
func TestRotateCommand(t *testing.T) {
	dir := newPKI(t)
	mustRun(t, "issuer", "--dir", dir)
	out := mustRun(t, "rotate", "--dir", dir)
	week := time.Now().Add(7 * 24 * time.Hour).Format("2006-01-02")
	for _, want := range []string{`made the next CA "Test CA G2"`, "cross.crt", "new online issuer", "runbook:", week, "pki rotate --finish", "expires"} {
		if !strings.Contains(out, want) {
			t.Errorf("pki rotate output lacks %q:\n%s", want, out)
		}
	}
	if code, _, errs := run(t, "rotate", "--dir", dir); code != 1 || !strings.Contains(errs, "--finish") {
		t.Fatalf("second rotate: %d %q", code, errs)
	}
	out = mustRun(t, "rotate", "--finish", "--dir", dir)
	if !strings.Contains(out, `"Test CA" left`) {
		t.Fatalf("rotate --finish: %s", out)
	}
}

// TestRotateLateMovers: a device whose certificate of the old CA lives
// longer than renewal.lifetime (issued before renewal, or with --days)
// moves to the new CA only when it first renews, at two thirds of its own
// life: the runbook's date is that one, and names the device. Before, it
// was one renewal.lifetime away, and a gateway moved to the new CA on that
// date cut such devices. Mutation caught: lateMovers ignored.
func TestRotateLateMovers(t *testing.T) {
	dir := newPKI(t)
	mustRun(t, "issuer", "--dir", dir)
	issue(t, dir, "--device", "short")
	issue(t, dir, "--device", "old-laptop", "--days", "90")
	issue(t, dir, "--device", "revoked", "--days", "300")
	mustRun(t, "revoke", "--dir", dir, "--device", "revoked")
	out := mustRun(t, "rotate", "--dir", dir)
	week := time.Now().Add(7 * 24 * time.Hour).Format("2006-01-02")
	late := time.Now().Add(time.Duration((2.0/3 + 0.05) * 90 * 24 * float64(time.Hour)))
	if strings.Contains(out, week+"  every device") || !strings.Contains(out, "1 device certificate(s)") || !strings.Contains(out, "old-laptop") ||
		!(strings.Contains(out, late.Format("2006-01-02")) || strings.Contains(out, late.Add(-24*time.Hour).Format("2006-01-02"))) {
		t.Fatalf("pki rotate with a 90-day device of the old CA:\n%s", out)
	}
	if code, _, errs := run(t, "rotate", "--dir", newPKI(t), "--renew-at", "1.5"); code != 2 || !strings.Contains(errs, "renew_at") {
		t.Fatalf("--renew-at 1.5: %d %q", code, errs)
	}
}

// TestListRenewed: pki list --renewed shows what each device holds now
// per the gateways' issuance records, with a revoked lineage marked.
func TestListRenewed(t *testing.T) {
	dir := newPKI(t)
	mustRun(t, "issuer", "--dir", dir)
	alice := issue(t, dir, "--device", "alice")
	issue(t, dir, "--device", "bob")
	is, err := renew.Load(filepath.Join(dir, "renewal-issuer.crt"), filepath.Join(dir, "renewal-issuer.key"))
	if err != nil {
		t.Fatal(err)
	}
	rec1, rec2 := filepath.Join(t.TempDir(), "gw1.jsonl"), filepath.Join(t.TempDir(), "gw2.jsonl")
	var newest string
	for i, path := range []string{rec1, rec2, rec2} {
		j, err := renew.OpenJournal(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"alice", "bob"} {
			enroll := loadLeaf(t, filepath.Join(dir, "devices", name+".crt"))[0]
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			c, err := is.Reissue(append([]*x509.Certificate{enroll}, loadLeaf(t, filepath.Join(dir, "root.crt"))...), k.Public(), time.Now().Add(time.Duration(i)*time.Minute), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if err := j.Append(renew.RecordOf(c, enroll, time.Now().Add(time.Duration(i)*time.Minute))); err != nil {
				t.Fatal(err)
			}
			if name == "alice" {
				newest = pki.FormatSerial(c.SerialNumber)
			}
		}
		j.Close()
	}
	mustRun(t, "revoke", "--dir", dir, "--device", "bob")
	out := mustRun(t, "list", "--dir", dir, "--renewed", rec1, "--renewed", rec2)
	held := out[strings.Index(out, "Held now"):]
	if strings.Count(held, "\n") != 4 || !strings.Contains(held, newest) || !strings.Contains(held, alice) {
		t.Fatalf("held section:\n%s", held)
	}
	for _, l := range strings.Split(held, "\n") {
		if strings.Contains(l, " bob ") && !strings.Contains(l, "revoked (lineage)") {
			t.Errorf("bob's renewal is not shown revoked by lineage: %q", l)
		}
		if strings.Contains(l, " alice ") && !strings.HasSuffix(strings.TrimSpace(l), "valid") {
			t.Errorf("alice's line: %q", l)
		}
	}

	if code, _, _ := run(t, "list", "--dir", dir, "--renewed", filepath.Join(t.TempDir(), "none")); code != 1 {
		t.Error("a missing record file is not an error")
	}
}
