package pkicmd

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sallyport/sallyport/pki/ca"
)

func init() {
	register(&command{
		name:    "list",
		summary: "table of issued certificates with their status",
		usage:   "",
		help: `Print every certificate in the index: serial, kind, name, user, groups,
not-after and status (valid, expired, revoked, not yet valid, or
"expires in Nd" when under 30 days are left).`,
		example: `  sallyport pki list --dir /etc/sallyport/pki`,
		flags: func(fs *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			return func(pos []string, stdout, stderr io.Writer) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				recs, err := ca.New(dirOf(fs)).List()
				if err != nil {
					return err
				}
				now := time.Now()
				tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "SERIAL\tKIND\tNAME\tUSER\tGROUPS\tNOT AFTER\tSTATUS")
				for _, r := range recs {
					user, groups := r.User, strings.Join(r.Groups, ",")
					if user == "" {
						user = "-"
					}
					if groups == "" {
						groups = "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Serial, r.Kind, r.Name, user, groups, r.NotAfter.UTC().Format("2006-01-02"), r.Status(now))
				}
				return tw.Flush()
			}
		},
	})
}
