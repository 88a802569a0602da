package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sallyport/sallyport/client"
	"github.com/sallyport/sallyport/internal/adminsock"
	"github.com/sallyport/sallyport/internal/cmdutil"
	"github.com/sallyport/sallyport/server"
	"github.com/sallyport/sallyport/tunnel"
)

// adminFlags pick the admin socket of a running gateway or client:
// --socket, or the one named in the config given with -c, or the default.
type adminFlags struct {
	socket   string
	config   string
	isServer bool
}

func (f *adminFlags) add(cmd *cobra.Command) {
	what := "client.toml"
	if f.isServer {
		what = "server.toml"
	}
	cmd.Flags().StringVar(&f.socket, "socket", "", "admin socket of the running process")
	cmd.Flags().StringVarP(&f.config, "config", "c", "", "config file to read the admin socket from ("+what+")")
}

// clientSocketDir is where running clients put their admin sockets (a
// variable so tests look in a directory of their own, not the host's).
var clientSocketDir = filepath.Dir(client.DefaultSocket("sp0"))

func (f *adminFlags) path() (string, error) {
	switch {
	case f.socket != "" && f.config != "":
		return "", cmdutil.Usagef("give --socket or --config, not both")
	case f.socket != "":
		return f.socket, nil
	case f.config != "" && f.isServer:
		cfg, err := server.LoadConfig(f.config)
		if err != nil {
			return "", err
		}
		return cfg.Admin.Socket, nil
	case f.config != "":
		cfg, err := client.LoadConfig(f.config)
		if err != nil {
			return "", err
		}
		return cfg.Admin.Socket, nil
	case f.isServer:
		return server.DefaultAdminSocket, nil
	}
	// No flag: the one client running, whatever its device or profile.
	socks, _ := filepath.Glob(filepath.Join(clientSocketDir, "client-*.sock"))
	switch len(socks) {
	case 0:
		return client.DefaultSocket("sp0"), nil
	case 1:
		return socks[0], nil
	}
	return "", cmdutil.Usagef("several tunnels are up (%s): say which with -c PROFILE.toml or --socket", strings.Join(socks, ", "))
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
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
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

func statusCmd() *cobra.Command {
	var f adminFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "status",
		Short:   "show the laptop's tunnel",
		Long:    "Shows the laptop's tunnel: state, server, address, routes, DNS, traffic, certificate.",
		Example: "  sallyport status -c acme-vpn.toml",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st client.Status
			if _, err := f.call("status", "", &st); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), st)
			}
			return printClientStatus(cmd.OutOrStdout(), st)
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printClientStatus(w io.Writer, st client.Status) error {
	state := "connected"
	if !st.Connected {
		state = "reconnecting"
		if st.Message != "" {
			state = st.Message
		} else if st.LastError != "" {
			state += " (" + st.LastError + ")"
		}
		if !st.RetryAt.IsZero() {
			state += fmt.Sprintf(" (next try %s)", st.RetryAt.Local().Format("15:04:05"))
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "state:\t%s\n", state)
	fmt.Fprintf(tw, "device:\t%s\n", st.Device)
	fmt.Fprintf(tw, "server:\t%s\n", dash(st.Server))
	if st.Path != "" {
		path := map[string]string{client.PathQUIC: "datagram (CONNECT-IP over QUIC)", client.PathTLS: "TLS stream"}[st.Path]
		if path == "" {
			path = st.Path
		}
		if st.PathReason != "" {
			path += ": " + st.PathReason
		}
		if st.MTU > 0 {
			path += fmt.Sprintf(" (MTU %d)", st.MTU)
		}
		fmt.Fprintf(tw, "path:\t%s\n", path)
	}
	fmt.Fprintf(tw, "address:\t%s\n", dash(st.Address))
	fmt.Fprintf(tw, "routes:\t%s\n", dash(strings.Join(st.Routes, ", ")))
	dns := dash(strings.Join(st.DNS, ", "))
	switch {
	case st.DNSMode != "":
		dns += " (via " + st.DNSMode + ")"
	case len(st.DNS) > 0:
		dns += " (not applied; see the log)"
	}
	fmt.Fprintf(tw, "dns:\t%s\n", dns)
	// What the kernel has now, read back (it outlives a reconnect).
	in := st.Installed
	fmt.Fprintf(tw, "table %d:\t%s\n", in.Table, dash(strings.Join(in.Routes, ", ")))
	fmt.Fprintf(tw, "rules:\t%s\n", dash(strings.Join(in.Rules, "; ")))
	ks := "off"
	if in.KillSwitch {
		ks = "on (traffic outside the tunnel is blocked)"
	}
	fmt.Fprintf(tw, "kill switch:\t%s\n", ks)
	if st.InstallErr != "" {
		fmt.Fprintf(tw, "read-back error:\t%s\n", st.InstallErr)
	}
	if !st.Since.IsZero() {
		fmt.Fprintf(tw, "since:\t%s\n", st.Since.Format(time.RFC3339))
	}
	fmt.Fprintf(tw, "traffic:\t%s in, %s out\n", humanBytes(st.BytesIn), humanBytes(st.BytesOut))
	warn := ""
	if st.CertDaysLeft < 14 && !st.Renewal {
		warn = "  WARNING: renew soon"
	}
	fmt.Fprintf(tw, "certificate:\texpires %s (%d days left)%s\n", st.CertNotAfter.Format("2006-01-02"), st.CertDaysLeft, warn)
	if st.CertSerial != "" {
		fmt.Fprintf(tw, "serial:\t%s\n", st.CertSerial)
	}
	switch {
	case st.Renewal:
		line := "renews itself at " + st.RenewAt.Format("2006-01-02 15:04")
		if st.Renewals > 0 {
			line += fmt.Sprintf(" (renewed %d time(s) since up, last %s)", st.Renewals, st.RenewedAt.Format("2006-01-02 15:04"))
		}
		fmt.Fprintf(tw, "renewal:\t%s\n", line)
	case st.Renewals > 0:
		fmt.Fprintf(tw, "renewal:\trenewed %d time(s) since up, last %s\n", st.Renewals, st.RenewedAt.Format("2006-01-02 15:04"))
	}
	if st.RenewError != "" {
		fmt.Fprintf(tw, "renewal error:\t%s\n", st.RenewError)
	}
	if st.KeyLocation != "" {
		fmt.Fprintf(tw, "device key:\t%s\n", keyWords(st.KeyKind, st.KeyLocation))
	}
	return tw.Flush()
}

func downCmd() *cobra.Command {
	var f adminFlags
	cmd := &cobra.Command{
		Use:   "down",
		Short: "take the laptop's tunnel down",
		Long: `Takes the tunnel down and removes its TUN device, routes, rules, kill switch
and DNS settings. When no client is running (it crashed or was killed), removes
the kill switch, routing rules and routes it left behind and restores its DNS
(resolv.conf byte for byte, or the link in systemd-resolved), for the device
and table in --config, or sp0 and the default table.`,
		Example: "  sallyport down -c acme-vpn.toml",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sock, err := f.call("down", "", nil)
			if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrNotExist) {
				return removeLeftovers(cmd, f, err)
			}
			if err != nil {
				return err
			}
			// Wait for the client to finish its cleanup: the socket goes away last.
			for i := 0; i < 100; i++ {
				if _, err := os.Stat(sock); errors.Is(err, os.ErrNotExist) {
					fmt.Fprintln(cmd.OutOrStdout(), "tunnel down")
					return nil
				}
				time.Sleep(50 * time.Millisecond)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "down requested; the client is still cleaning up")
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

// removeLeftovers cleans up after a client that is not running any more:
// its kill switch would otherwise keep the laptop offline.
func removeLeftovers(cmd *cobra.Command, f adminFlags, callErr error) error {
	cfg := &client.Config{Tunnel: client.TunnelConfig{Device: "sp0", Table: client.DefaultTable}}
	if f.config != "" {
		var err error
		if cfg, err = client.LoadConfig(f.config); err != nil {
			return err
		}
	}
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
	n, err := client.RemoveLeftovers(cfg, log)
	if err != nil {
		return fmt.Errorf("no client running (%v); removing what it left behind: %w", callErr, err)
	}
	if n == 0 {
		return fmt.Errorf("no client running: %w", callErr)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "no client running; removed the kill switch, routing and DNS settings it left behind (%d items)\n", n)
	return nil
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
