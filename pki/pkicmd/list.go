package pkicmd

import (
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sallyport/sallyport/pki/ca"
	"github.com/sallyport/sallyport/pki/renew"
)

func init() {
	register(&command{
		name:    "list",
		summary: "table of issued certificates with their status",
		usage:   "[--renewed FILE]...",
		help: `Print every certificate in the index: serial, kind, name, user, groups,
not-after and status (valid, expired, revoked, not yet valid, or
"expires in Nd" when under 30 days are left). With --renewed, also what
each device holds now according to a gateway's issuance record
(renewal.record, default /var/lib/sallyport/renewals.jsonl; copy it from
each gateway): the newest renewed certificate of each device, its lineage
(the enrollment serial it descends from) and its status; a device whose
enrollment is revoked shows "revoked (lineage)".`,
		example: `  sallyport pki list --dir /etc/sallyport/pki
  sallyport pki list --renewed gw1-renewals.jsonl --renewed gw2-renewals.jsonl`,
		flags: func(fs *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			var renewed listFlag
			fs.Var(&renewed, "renewed", "a gateway's issuance record (renewal.record); repeatable")
			return func(pos []string, stdout, stderr io.Writer) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				recs, err := ca.New(dirOf(fs)).List()
				if err != nil {
					return err
				}
				var held []renew.Record
				for _, f := range renewed {
					rs, err := renew.Latest(f)
					if err != nil {
						return err
					}
					held = newestPerDevice(append(held, rs...))
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
				if err := tw.Flush(); err != nil {
					return err
				}
				if len(renewed) == 0 {
					return nil
				}
				revoked := map[string]bool{}
				for _, r := range recs {
					if r.Revoked() {
						revoked[r.Serial] = true
					}
				}
				fmt.Fprintf(stdout, "\nHeld now (renewed by the gateways):\n")
				tw = tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "SERIAL\tNAME\tLINEAGE\tISSUED\tNOT AFTER\tSTATUS")
				for _, r := range held {
					status := "valid"
					switch {
					case revoked[r.Lineage]:
						status = "revoked (lineage)"
					case revoked[r.Serial]:
						status = "revoked"
					case now.After(r.NotAfter):
						status = "expired"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Serial, r.Device, r.Lineage, r.IssuedAt.UTC().Format("2006-01-02 15:04"),
						r.NotAfter.UTC().Format("2006-01-02 15:04"), status)
				}
				return tw.Flush()
			}
		},
	})
}

// newestPerDevice keeps the newest record of each device (by lineage),
// ordered by device name.
func newestPerDevice(rs []renew.Record) []renew.Record {
	m := map[string]renew.Record{}
	for _, r := range rs {
		k := r.LineageIssuer + "\x00" + r.Lineage
		if cur, ok := m[k]; !ok || r.IssuedAt.After(cur.IssuedAt) {
			m[k] = r
		}
	}
	out := make([]renew.Record, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Device < out[j].Device || out[i].Device == out[j].Device && out[i].Serial < out[j].Serial
	})
	return out
}
