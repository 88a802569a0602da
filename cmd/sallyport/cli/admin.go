package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sallyport/sallyport/internal/adminsock"
	"github.com/sallyport/sallyport/internal/cmdutil"
	"github.com/sallyport/sallyport/server"
	"github.com/sallyport/sallyport/tunnel"
)

// adminFlags pick the admin socket of the running gateway: --socket, or
// the one named in the config given with -c, or the default. (The
// laptop's commands have laptopFlags, laptop.go.)
type adminFlags struct {
	socket   string
	config   string
	isServer bool
}

func (f *adminFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.socket, "socket", "", "admin socket of the running process")
	cmd.Flags().StringVarP(&f.config, "config", "c", "", "config file to read the admin socket from (server.toml)")
}

func (f *adminFlags) path() (string, error) {
	switch {
	case f.socket != "" && f.config != "":
		return "", cmdutil.Usagef("give --socket or --config, not both")
	case f.socket != "":
		return f.socket, nil
	case f.config != "":
		cfg, err := server.LoadConfig(f.config)
		if err != nil {
			return "", err
		}
		return cfg.Admin.Socket, nil
	}
	return server.DefaultAdminSocket, nil
}

// call sends cmd (for device, if any) to the admin socket and decodes the
// reply into out.
func (f *adminFlags) call(cmd, device string, out any) (string, error) {
	sock, err := f.path()
	if err != nil {
		return "", err
	}
	return sock, adminsock.Call(sock, adminsock.Request{Cmd: cmd, Device: device}, out)
}

func serverStatusCmd() *cobra.Command {
	f := adminFlags{isServer: true}
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "status",
		Short:   "list device sessions on this gateway",
		Long:    "Lists the live device sessions of the running gateway.",
		Example: "  sallyport server status\n  sallyport server status --json -c /etc/sallyport/server.toml",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st server.Status
			if _, err := f.call("status", "", &st); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				return printJSON(w, st)
			}
			fmt.Fprintf(w, "gateway %s on %s (%s), up since %s, %d session(s)\n", joinAddrs(st.Address, st.Address6), st.Listen, st.Device,
				st.Started.Format(time.RFC3339), len(st.Sessions))
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			names := make([]string, len(tunnel.GatewayDrops))
			for i, r := range tunnel.GatewayDrops {
				names[i] = r.String()
			}
			fmt.Fprintf(tw, "DEVICE\tUSER\tGROUPS\tADDRESS\tSINCE\tSERIAL\tCERT UNTIL\tLINEAGE\tIN\tOUT\tDROPPED (%s)\n", strings.Join(names, "/"))
			for _, s := range st.Sessions {
				counts := make([]string, len(tunnel.GatewayDrops))
				for i, r := range tunnel.GatewayDrops {
					counts[i] = strconv.FormatUint(s.Dropped.Get(r), 10)
				}
				lineage := shortSerial(s.Lineage)
				if s.Lineage == s.Serial {
					lineage = "(itself)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Device, dash(s.User), dash(strings.Join(s.Groups, ",")),
					joinAddrs(s.Address, s.Address6), s.Since.Format("2006-01-02 15:04:05"), shortSerial(s.Serial),
					s.CertNotAfter.UTC().Format("2006-01-02 15:04Z"), lineage, humanBytes(s.BytesIn), humanBytes(s.BytesOut),
					strings.Join(counts, "/"))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			printCAsAndRenewal(w, st)
			printHandshakes(w, st)
			printDuplicates(w, st)
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printDuplicates names every device found in use on two machines in the
// last minute, with what to do about it.
func printDuplicates(w io.Writer, st server.Status) {
	for _, d := range st.Duplicates {
		fmt.Fprintf(w, "DUPLICATE: device %s (serial %s) is in use on two machines: the session from %s holds it; %d connection(s) refused, the last from %s at %s. One of the two is not the owner's (either may be the copy): sallyport pki revoke %s --reason keyCompromise, then issue the owner a new certificate\n",
			d.Device, shortSerial(d.Serial), d.Holder, d.Refused, d.Other, d.Last.UTC().Format(time.RFC3339), d.Serial)
	}
}

// printHandshakes prints the handshake slots and what was closed before
// authentication since start (a flood of strangers shows here).
func printHandshakes(w io.Writer, st server.Status) {
	h := st.Handshakes
	fmt.Fprintf(w, "handshakes: %d in flight (%d waiting for their ClientHello, %d past it and not yet authenticated) from %d sources, %d on the datagram path; max %d, %d per source\n",
		h.InFlight, h.WaitingHello, h.PastHello, h.Sources, h.QUICInFlight, h.Max, h.MaxPerSource)
	var closed []string
	for _, r := range []tunnel.Reason{tunnel.ReasonFirstByteTimeout, tunnel.ReasonHelloTimeout, tunnel.ReasonEvicted, tunnel.ReasonPerSource, tunnel.ReasonOverload} {
		closed = append(closed, fmt.Sprintf("%s %d", r, st.Refused[string(r)]))
	}
	fmt.Fprintf(w, "closed before authentication since start: %s\n", strings.Join(closed, ", "))
}

func serverKickCmd() *cobra.Command {
	f := adminFlags{isServer: true}
	cmd := &cobra.Command{
		Use:   "kick DEVICE",
		Short: "end a device's session",
		Long: `Ends the session of DEVICE (its certificate CN). The device may reconnect;
revoke its certificate to keep it out.`,
		Example: "  sallyport server kick alice-laptop",
		Args:    cmdutil.ExactArgs(1, "DEVICE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := f.call("kick", args[0], nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "kicked %s\n", args[0])
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func serverReloadCmd() *cobra.Command {
	f := adminFlags{isServer: true}
	cmd := &cobra.Command{
		Use:     "reload",
		Short:   "re-read config, CA, CRL and policies",
		Long:    "Re-reads config, CA, CRL and policies (like SIGHUP) and re-checks live sessions.",
		Example: "  sallyport server reload",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := f.call("reload", "", nil); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "reloaded (see the gateway log for the outcome)")
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// joinAddrs shows a session's or the gateway's tunnel addresses: the IPv4
// (or only) one, then the IPv6 one of a dual-stack gateway.
func joinAddrs(addr, addr6 string) string {
	if addr6 == "" {
		return addr
	}
	return addr + "," + addr6
}

// keyWords says where the device key lives: a file anyone with a copy can
// use, or hardware it cannot leave.
func keyWords(kind, where string) string {
	switch kind {
	case "tpm":
		return "in this laptop's TPM (cannot be copied off it): " + where
	case "pkcs11":
		return "in a PKCS#11 token (cannot be copied off it): " + where
	}
	return where + " (a copy of the file is a copy of the key)"
}

// shortSerial is the first 16 hex digits of a serial (the JSON has it whole).
func shortSerial(s string) string {
	if len(s) > 16 {
		return s[:16] + "…"
	}
	return dash(s)
}

// printCAsAndRenewal prints the devices per CA (a CA rotation shows here)
// and the online issuer.
func printCAsAndRenewal(w io.Writer, st server.Status) {
	cas := make([]string, 0, len(st.CAs))
	for ca := range st.CAs {
		cas = append(cas, ca)
	}
	sort.Strings(cas)
	for _, ca := range cas {
		fmt.Fprintf(w, "devices under CA %s: %d\n", ca, st.CAs[ca])
	}
	if r := st.Renewal; r != nil {
		fmt.Fprintf(w, "renewal: issuer %s (until %s), lifetime %s, renew at %.2f; %d renewed, %d refused since start\n",
			r.Issuer, r.IssuerNotAfter.UTC().Format(time.RFC3339), r.Lifetime, r.RenewAt, r.Renewed, r.Refused)
	}
}
