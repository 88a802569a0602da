package pkicmd

import (
	"flag"
	"fmt"
	"io"

	"github.com/sallyport/sallyport/pki/ca"
)

func init() {
	register(&command{
		name:    "crl",
		summary: "re-sign the CRL (run from cron before nextUpdate)",
		usage:   "[--days N]",
		help: `Re-sign crl.pem with every recorded revocation, a higher CRL number and a
new nextUpdate --days ahead. Run it regularly (well before nextUpdate) so
gateways never hold a stale CRL; a gateway re-reads its CRL file by itself
when it changes.`,
		example: `  # crontab: every week
  0 3 * * 1  sallyport pki crl --dir /etc/sallyport/pki`,
		flags: func(fs *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			days := fs.Int("days", ca.DefaultCRLDays, "days until nextUpdate")
			return func(pos []string, stdout, stderr io.Writer) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				p := ca.New(dirOf(fs))
				crl, err := p.WriteCRL(*days)
				if err != nil {
					return err
				}
				fmt.Fprintf(stdout, "CRL %s: number %s, %d revoked, next update %s\n", p.Path("crl.pem"), crl.Number, len(crl.RevokedCertificateEntries), fmtTime(crl.NextUpdate))
				return nil
			}
		},
	})
}
