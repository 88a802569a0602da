package e2e

// The renewal helper: a device speaking the real protocol (tunnel's frames
// and messages, pki's renewal request) to exercise what a laptop never
// does on purpose: replay a request recorded on another session, and ask
// with a certificate that has just expired.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/tunnel"
)

// renewDev is one device session of the helper.
type renewDev struct {
	c *tls.Conn
	r *tunnel.Reader
	w *tunnel.Writer
}

func renewDial(addr, serverName, caPath, certPath, keyPath string) (*renewDev, error) {
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no CA in " + caPath)
	}
	kp, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS13, NextProtos: []string{tunnel.ALPN},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp, nil }}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp4", addr, cfg)
	if err != nil {
		return nil, err
	}
	return &renewDev{c: c, r: tunnel.NewReader(c, 0), w: tunnel.NewWriter(c, 0)}, nil
}

// up sends a hello offering renewal and reads the config.
func (d *renewDev) up() (tunnel.Config, error) {
	_ = d.c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := d.w.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion, Caps: []string{tunnel.CapRenew}, Software: "e2e-renew"}); err != nil {
		return tunnel.Config{}, err
	}
	typ, p, err := d.r.Next()
	if err != nil {
		return tunnel.Config{}, err
	}
	if typ != tunnel.FrameConfig {
		m, _ := tunnel.DecodeClose(p)
		return tunnel.Config{}, fmt.Errorf("frame %s (%s), want config", tunnel.FrameName(typ), m.Reason)
	}
	return tunnel.DecodeConfig(p)
}

// renew sends csr and returns the answer, or the reason of a Close frame.
func (d *renewDev) renew(csr []byte) (tunnel.RenewReply, string, error) {
	b, err := tunnel.EncodeRenewRequest(tunnel.RenewRequest{CSR: csr})
	if err != nil {
		return tunnel.RenewReply{}, "", err
	}
	_ = d.c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := d.w.WriteControl(tunnel.FrameRenew, b); err != nil {
		return tunnel.RenewReply{}, "", err
	}
	for {
		typ, p, err := d.r.Next()
		if err != nil {
			return tunnel.RenewReply{}, "stream-ended", nil
		}
		switch typ {
		case tunnel.FrameRenewed:
			r, err := tunnel.DecodeRenewReply(p)
			return r, "", err
		case tunnel.FrameClose:
			m, _ := tunnel.DecodeClose(p)
			return tunnel.RenewReply{}, m.Reason, nil
		}
	}
}

func newCSR(binding []byte) ([]byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return pki.NewRenewalRequest(k, "e2e", binding)
}

// helperRenew runs mode:
//   - "replay": records a request bound to session A, sends it on session
//     B (replayed=REASON), then a request bound to B (own=REASON or
//     own=issued serial=S);
//   - "expired": holds a session until its certificate has expired, then
//     asks (result=issued, or refused=REASON, or closed=REASON).
func helperRenew(mode, addr, serverName, caPath, certPath, keyPath string) error {
	switch mode {
	case "replay":
		a, err := renewDial(addr, serverName, caPath, certPath, keyPath)
		if err != nil {
			return err
		}
		defer a.c.Close()
		bindA, err := pki.RenewalBinding(a.c.ConnectionState())
		if err != nil {
			return err
		}
		b, err := renewDial(addr, serverName, caPath, certPath, keyPath)
		if err != nil {
			return err
		}
		defer b.c.Close()
		pc, err := b.up()
		if err != nil {
			return err
		}
		fmt.Printf("renew_offered=%v\n", tunnel.HasCap(pc.Caps, tunnel.CapRenew))
		csrA, err := newCSR(bindA)
		if err != nil {
			return err
		}
		r, closed, err := b.renew(csrA)
		if err != nil {
			return err
		}
		fmt.Printf("replayed=%s certs=%d closed=%s\n", r.Reason, len(r.Certs), closed)
		bindB, _ := pki.RenewalBinding(b.c.ConnectionState())
		csrB, err := newCSR(bindB)
		if err != nil {
			return err
		}
		r, closed, err = b.renew(csrB)
		if err != nil {
			return err
		}
		if len(r.Certs) > 0 {
			x, _ := x509.ParseCertificate(r.Certs[0])
			fmt.Printf("own=issued serial=%s\n", pki.FormatSerial(x.SerialNumber))
		} else {
			fmt.Printf("own=%s closed=%s\n", r.Reason, closed)
		}
	case "expired":
		d, err := renewDial(addr, serverName, caPath, certPath, keyPath)
		if err != nil {
			return err
		}
		defer d.c.Close()
		if _, err := d.up(); err != nil {
			return err
		}
		kp, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return err
		}
		wait := time.Until(kp.Leaf.NotAfter) + 500*time.Millisecond
		fmt.Printf("waiting=%s\n", wait.Round(time.Millisecond))
		time.Sleep(wait)
		bind, _ := pki.RenewalBinding(d.c.ConnectionState())
		csr, err := newCSR(bind)
		if err != nil {
			return err
		}
		r, closed, err := d.renew(csr)
		switch {
		case err != nil && strings.Contains(err.Error(), "closed"):
			fmt.Println("closed=connection")
		case err != nil:
			return err
		case len(r.Certs) > 0:
			fmt.Println("result=issued")
		case closed != "":
			fmt.Printf("closed=%s\n", closed)
		default:
			fmt.Printf("refused=%s\n", r.Reason)
		}
	default:
		return fmt.Errorf("unknown renew mode %q", mode)
	}
	return nil
}
