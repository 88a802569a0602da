package client

import (
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki"
)

// A device certificate outside its validity fails New at once, with its
// dates, instead of a client that dials and is refused (or, before this,
// that logged "expires soon ... days_left=-554" and dialled anyway).
func TestDeviceCertificateValidity(t *testing.T) {
	ca := newTestCA(t, "Test CA")
	at := func(nb, na time.Time) func(*x509.Certificate) {
		return func(c *x509.Certificate) { c.NotBefore, c.NotAfter = nb, na }
	}
	now := time.Now()
	for _, tt := range []struct {
		name string
		edit func(*x509.Certificate)
		want []string // "" = accepted
	}{
		{"valid", nil, nil},
		{"expires in a day", at(now.Add(-time.Hour), now.Add(24*time.Hour)), nil},
		{"expired", at(time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)),
			[]string{"device certificate (tls.cert_pem in acme.toml) expired on 2021-01-01 00:00 UTC,", "days ago (valid from 2020-01-01 00:00 UTC to 2021-01-01 00:00 UTC): ask your admin for a new one"}},
		{"expired an hour ago", at(now.Add(-48*time.Hour), now.Add(-time.Hour)), []string{"expired on", ", today ("}},
		{"renewed, then offline too long", func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = now.Add(-10*24*time.Hour), now.Add(-3*24*time.Hour)
			ext, _ := pki.LineageExtension(pki.Lineage{Serial: big.NewInt(0x5eed), RawIssuer: ca.cert.RawSubject})
			c.ExtraExtensions = append(c.ExtraExtensions, ext)
		}, []string{"3 days ago", "offline for longer than its certificate lives (7 days)", "re-enroll",
			"sallyport pki revoke --device alice-laptop --reason superseded", "sallyport pki bundle --device alice-laptop"}},
		{"not yet valid", at(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)),
			[]string{"is not valid yet: valid from 2030-01-01 00:00 UTC to 2031-01-01 00:00 UTC, and this laptop's clock says", "check the clock"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, certPEM, keyPEM := ca.leaf(t, "alice-laptop", both(deviceLeaf, tt.edit))
			cfg := &Config{Server: "gw.test:443", TLS: TLSConfig{CAPEM: string(ca.pem), CertPEM: string(certPEM), KeyPEM: string(keyPEM)},
				Path: "acme.toml"} // relative: the key mode check stats a file that is not there
			if err := cfg.normalize(); err != nil {
				t.Fatal(err)
			}
			_, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("New accepted a certificate outside its validity")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nwant %q", err, w)
				}
			}
		})
	}
}
