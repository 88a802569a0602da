package pkicmd

import (
	"flag"
	"fmt"
	"io"

	"github.com/sallyport/sallyport/pki/ca"
)

func init() {
	register(&command{
		name:    "revoke",
		summary: "revoke a certificate by serial or device, rewrite the CRL",
		usage:   "SERIAL | --device NAME [--reason REASON] [--crl-days N]",
		help: `Record a revocation in the index and re-sign crl.pem (new CRL number,
nextUpdate --crl-days ahead). SERIAL may be spelled as hex with or without
colons in any case ("5A:3B:..", "0x5a3b.."), or decimal ("d:1234" or plain
digits); it must be in the index. --device revokes every certificate issued
to that device. Revoking twice is not an error; revocations are never
dropped. Reasons: unspecified, keyCompromise, cACompromise,
affiliationChanged, superseded, cessationOfOperation, certificateHold,
privilegeWithdrawn, aACompromise. A gateway whose tls.crl is this crl.pem
re-reads it by itself within a second and disconnects the revoked device: no
reload or restart is needed. A gateway on another machine needs the new
crl.pem copied to it; it picks that up the same way.`,
		example: `  sallyport pki revoke 1a7f3c9e... --reason keyCompromise
  sallyport pki revoke --device alice-laptop --reason superseded`,
		flags: func(fs *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			device := fs.String("device", "", "revoke every certificate of this device")
			reason := fs.String("reason", "unspecified", "revocation reason")
			crlDays := fs.Int("crl-days", ca.DefaultCRLDays, "days until the new CRL's nextUpdate")
			return func(pos []string, stdout, stderr io.Writer) error {
				serial := ""
				switch {
				case len(pos) > 1:
					return usagef("one serial at a time (got %d arguments)", len(pos))
				case len(pos) == 1 && *device != "":
					return usagef("give a serial or --device, not both")
				case len(pos) == 1:
					serial = pos[0]
				case *device == "":
					return usagef("give a SERIAL or --device NAME")
				}
				p := ca.New(dirOf(fs))
				res, err := p.Revoke(serial, *device, *reason, *crlDays)
				if err != nil {
					return err
				}
				for _, r := range res {
					if r.Already {
						fmt.Fprintf(stdout, "already revoked: %s %s serial %s (%s, %s)\n", r.Record.Kind, r.Record.Name, r.Record.Serial, r.Record.Reason, fmtTime(r.Record.RevokedAt))
					} else {
						fmt.Fprintf(stdout, "revoked: %s %s serial %s (%s)\n", r.Record.Kind, r.Record.Name, r.Record.Serial, r.Record.Reason)
					}
				}
				fmt.Fprintf(stdout, "CRL written: %s\n", p.Path("crl.pem"))
				return nil
			}
		},
	})
}
