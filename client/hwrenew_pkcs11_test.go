//go:build pkcs11 && cgo

package client

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/hwkey"
	"github.com/sallyport/sallyport/pki/hwkey/hwtest"
	"github.com/sallyport/sallyport/tunnel"
)

// TestRenewalInToken: a laptop whose key is in a PKCS#11 token renews with
// a new key made in the same token (a new object, labelled after the old
// one), and the profile's key_pkcs11 then names it.
func TestRenewalInToken(t *testing.T) {
	dir := t.TempDir()
	h := hwtest.NewSoftHSM(t, dir, "alice-card", "1234")
	t.Setenv("SOFTHSM2_CONF", h.Conf)
	uri := h.URI("sallyport", hwtest.WritePIN(t, filepath.Join(dir, "pin"), h.PIN))
	s, err := hwkey.GeneratePKCS11(uri, hwkey.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	pub := s.Public()
	s.Close()
	e := startClient(t, envOpt{editCA: hwRenewProfile(t, pub, fmt.Sprintf("key_pkcs11 = %q", uri), func(c *TLSConfig) { c.KeyPKCS11 = uri }, nil)})
	srv, _ := e.up(renewConfig(0.5))
	renewed, _ := answerRenewalWith(t, srv, e.ca, time.Hour, false)
	e.status("one renewal", func(st Status) bool { return st.Renewals == 1 })
	cfg, err := LoadConfig(e.c.cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS.KeyPKCS11 == uri || !strings.Contains(cfg.TLS.KeyPKCS11, "object=sallyport-r") {
		t.Fatalf("profile key_pkcs11 %q, want a new object in the token", cfg.TLS.KeyPKCS11)
	}
	next, err := hwkey.Open(hwkey.Ref{PKCS11: cfg.TLS.KeyPKCS11})
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if !pki.SamePublicKey(next.Public(), renewed.PublicKey) || pki.SamePublicKey(next.Public(), pub) {
		t.Fatal("the renewed certificate is not for a new key in the token")
	}
	srv.tls.Close()
	s2 := e.gw.accept(t)
	if got := s2.tls.ConnectionState().PeerCertificates[0]; !got.Equal(renewed) {
		t.Fatalf("reconnected with serial %s, want the renewed %s", got.SerialNumber, renewed.SerialNumber)
	}
	_ = tunnel.CapRenew
}
