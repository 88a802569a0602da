package pkicmd

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/sallyport/sallyport/pki/ca"
)

func init() {
	register(&command{
		name:    "rotate",
		summary: "make the next CA (trusted beside the current one), or finish",
		usage:   "[--name NAME] [--days N] [--key TYPE] | --finish",
		help: `Start a CA rotation: make the next root (and issuing intermediate and online
issuer, when the PKI has them), which signs everything from now on, and keep
the current CA in previous/N. ca.crt then holds both roots and a
cross-certificate (the new root's subject and key signed by the old root):
install it on every gateway (tls.client_ca, renewal.ca_bundle) with the new
renewal-issuer.crt/.key, and devices move to the new CA as they renew, each
receiving the new bundle with its renewal (the cross-certificate is how a
laptop knows the admin vouches for the new root). When "sallyport server
status" shows no device under the old CA (one device lifetime after the
gateways got the new files), issue the gateways' next certificates
(pki server) and run "pki rotate --finish": the old CA leaves ca.crt and
signs no more CRLs. Needs the root key. See docs/renewal.md for the
runbook with dates.`,
		example: `  sallyport pki rotate --dir /etc/sallyport/pki
  sallyport pki rotate --finish --dir /etc/sallyport/pki`,
		flags: func(fs *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			name := fs.String("name", "", "the next root's common name (default: the current one + \" G2\", \" G3\", ...)")
			days := fs.Int("days", ca.DefaultRootDays, "the next root's lifetime in days")
			key := fs.String("key", "ecdsa", "key type: ecdsa (P-256), ed25519 or rsa3072")
			finish := fs.Bool("finish", false, "end the rotation: the previous CA leaves ca.crt and signs no more CRLs")
			lifetime := fs.Duration("device-lifetime", 7*24*time.Hour, "the gateways' renewal.lifetime, for the dates this prints")
			renewAt := fs.Float64("renew-at", 2.0/3, "the gateways' renewal.renew_at, for the dates this prints")
			return func(pos []string, stdout, stderr io.Writer) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				p := ca.New(dirOf(fs))
				if *finish {
					old, err := p.FinishRotation()
					if err != nil {
						return err
					}
					fmt.Fprintf(stdout, "rotation finished: %q left %s and signs no more CRLs (its files stay in %s)\n", old.Subject.CommonName, p.Path("ca.crt"), p.Path("previous"))
					fmt.Fprintf(stdout, "next: install the new %s and %s on every gateway (tls.client_ca, renewal.ca_bundle, tls.crl)\n", p.Path("ca.crt"), p.Path("crl.pem"))
					return nil
				}
				if *renewAt < 0.1 || *renewAt > 0.95 {
					return usagef("--renew-at %v: want 0.1 to 0.95, as renewal.renew_at", *renewAt)
				}
				kt, err := ca.ParseKeyType(*key)
				if err != nil {
					return usagef("%v", err)
				}
				r, err := p.Rotate(ca.RotateOptions{Name: *name, Days: *days, Key: kt})
				if err != nil {
					return err
				}
				now := time.Now()
				moved := now.Add(*lifetime)
				late, last, lastName, err := lateMovers(p, now, moved, *renewAt)
				if err != nil {
					return err
				}
				if late > 0 {
					moved = last
				}
				fmt.Fprintf(stdout, "made the next CA %q (until %s); the current %q is kept in %s and trusted beside it\n",
					r.New.Subject.CommonName, fmtTime(r.New.NotAfter), r.Old.Subject.CommonName, r.Generation)
				fmt.Fprintf(stdout, "cross-certificate (the new root vouched for by the old): %s/cross.crt\n", r.Generation)
				if r.Issuer != nil {
					cp, kp := p.RenewalIssuerPaths()
					fmt.Fprintf(stdout, "new online issuer: %s, %s\n", cp, kp)
				}
				fmt.Fprintf(stdout, "runbook:\n")
				fmt.Fprintf(stdout, "  %s  install %s (tls.client_ca, renewal.ca_bundle), %s (tls.crl) and the new online issuer on every gateway; they reload by themselves\n",
					now.Format("2006-01-02"), p.Path("ca.crt"), p.Path("crl.pem"))
				if late > 0 {
					fmt.Fprintf(stdout, "  %s  every device online since then has renewed under the new CA; check: sallyport server status (devices under CA)\n", moved.Format("2006-01-02"))
					fmt.Fprintf(stdout, "              not one renewal.lifetime (%s): %d device certificate(s) of the old CA live longer (issued before renewal, or with --days), and a device renews at %.0f%% of its own certificate's life;\n", *lifetime, late, 100**renewAt)
					fmt.Fprintf(stdout, "              the last, %s, about %s. Moving the gateways to the new CA before then cuts them; to be done sooner, issue those devices new bundles\n", lastName, last.Format("2006-01-02"))
				} else {
					fmt.Fprintf(stdout, "  %s  every device online since then has renewed under the new CA (one renewal.lifetime, %s); check: sallyport server status (devices under CA)\n",
						moved.Format("2006-01-02"), *lifetime)
				}
				fmt.Fprintf(stdout, "  then        issue each gateway's next certificate (sallyport pki server --name ...) and install it\n")
				fmt.Fprintf(stdout, "  then        sallyport pki rotate --finish, and install ca.crt and crl.pem again; devices still on the old CA (offline all along) are re-enrolled\n")
				fmt.Fprintf(stdout, "  %s  the old CA %q expires: finish well before\n", r.Old.NotAfter.Format("2006-01-02"), r.Old.Subject.CommonName)
				return nil
			}
		},
	})
}

// lateMovers counts the device certificates of the index, valid now and
// not revoked, that reach their renewal point (renewAt of their life, and
// the laptop's 5% jitter) after moved: a device holding one moves to the
// new CA only then. It returns the latest point and that device's name.
// A device that has renewed since its enrollment holds a shorter
// certificate the index does not know, so this errs on the late side.
func lateMovers(p *ca.PKI, now, moved time.Time, renewAt float64) (n int, last time.Time, name string, err error) {
	recs, err := p.List()
	if err != nil {
		return 0, time.Time{}, "", err
	}
	for _, r := range recs {
		if r.Kind != ca.KindDevice || r.Revoked() || !r.NotAfter.After(now) {
			continue
		}
		at := r.NotBefore.Add(time.Duration((renewAt + 0.05) * float64(r.NotAfter.Sub(r.NotBefore))))
		if !at.After(moved) {
			continue
		}
		n++
		if at.After(last) {
			last, name = at, r.Name
		}
	}
	return n, last, name, nil
}
