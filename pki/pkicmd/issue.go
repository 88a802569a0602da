package pkicmd

import (
	"flag"
	"fmt"
	"io"

	"github.com/sallyport/sallyport/pki/ca"
)

func init() {
	register(&command{
		name:    "issue",
		summary: "issue a device certificate and key",
		usage:   "--device NAME [--user USER] [--group G]... [--days N | --not-before T --not-after T] [--key TYPE]",
		help: `Issue a device certificate: CN = device name, one OU per --group, the user
in the subject UID attribute, clientAuth EKU only, a random 128-bit serial,
never valid past the issuing CA. When the PKI has an online issuer (pki
issuer), devices renew themselves, and --days defaults to 7 instead of 365.
Writes devices/NAME.crt (leaf +
intermediate) and devices/NAME.key, and prints the serial and SHA-256
fingerprint. Refuses while the device still has a valid certificate (revoke
it first). --not-before/--not-after take exact RFC 3339 times (e.g. to make
an already expired certificate for a test).`,
		example: `  sallyport pki issue --device alice-laptop --user alice --group eng --group ops --days 180`,
		flags: func(fs *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			device := fs.String("device", "", "device name, the certificate CN (required)")
			user := fs.String("user", "", "user the device belongs to (subject UID)")
			var groups listFlag
			fs.Var(&groups, "group", "group (subject OU); repeatable or comma-separated")
			issueFlags := addIssueFlags(fs, ca.DefaultDeviceDays)
			return func(pos []string, stdout, stderr io.Writer) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				if *device == "" {
					return usagef("--device is required")
				}
				o, err := issueFlags()
				if err != nil {
					return err
				}
				o.Name, o.User, o.Groups = *device, *user, groups
				p := ca.New(dirOf(fs))
				shortLife(fs, p, &o, stderr)
				is, err := p.IssueDevice(o)
				if err != nil {
					return err
				}
				printIssued(stdout, stderr, "device", is)
				return nil
			}
		},
	})
}

// shortLife gives a device the short default lifetime when the PKI has
// an online issuer and no lifetime was asked for: the device renews itself
// inside its sessions, so its first certificate only has to last until it
// connects, and a lost laptop's bundle soon stops working.
func shortLife(fs *flag.FlagSet, p *ca.PKI, o *ca.IssueOptions, stderr io.Writer) {
	days, _ := fs.Lookup("days").Value.(*intFlag)
	if days == nil || days.set || !o.NotAfter.IsZero() || !p.HasRenewalIssuer() {
		return
	}
	o.Days = ca.RenewedDeviceDays
	fmt.Fprintf(stderr, "note: this PKI has an online issuer, so devices renew themselves: %d days by default (--days N for another lifetime)\n", ca.RenewedDeviceDays)
}
