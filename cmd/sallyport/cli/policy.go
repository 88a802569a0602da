package cli

import (
	"crypto/x509"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sallyport/sallyport/internal/cmdutil"
	"github.com/sallyport/sallyport/server"
	"github.com/sallyport/sallyport/server/policy"
)

// policyCmd is `sallyport policy explain|test`: policy as code, offline
// from server.toml.
func policyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "explain and test the gateway's policies offline",
		Long: `Explains and tests the [[policy]] tables of a server.toml without a running
gateway: which policies match an identity and why, which allow rule admits a
destination, and a table of expectations to keep in CI.`,
		Args: cmdutil.NoArgs,
		RunE: cmdutil.NeedSubcommand,
	}
	cmd.AddCommand(policyExplainCmd(), policyTestCmd())
	return cmd
}

// policyFlags are what explain and test share.
type policyFlags struct {
	config, crl string
	local       bool
}

func (f *policyFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.config, "config", "c", "/etc/sallyport/server.toml", "gateway config file")
	cmd.Flags().StringVar(&f.crl, "crl", "", "CRL to check certificates against (default: the config's tls.crl)")
	cmd.Flags().BoolVar(&f.local, "local-addresses", true, "count this machine's addresses as the gateway's own (right on the gateway; =false on a CI machine)")
}

// load compiles the policies of the server config as the gateway does
// (with the gateway's own addresses) and the gates of the trust decision
// besides them (allowlists; the CRL of --crl, or else of the config's
// tls.crl). Errors exit 2: 1 is "deny".
func (f *policyFlags) load() (*policy.Set, []policy.Gate, error) {
	cfg, err := server.LoadConfig(f.config)
	if err != nil {
		return nil, nil, errExit2(err)
	}
	set, _, err := server.ExplainPolicies(cfg, f.local)
	if err != nil {
		return nil, nil, errExit2(err)
	}
	gates, err := server.AdmissionGates(cfg, f.crl)
	if err != nil {
		return nil, nil, errExit2(err)
	}
	return set, gates, nil
}

// errExit2 is err ending a policy command with status 2 (1 is a verdict).
func errExit2(err error) error { return cmdutil.CodeError{Code: 2, Err: err} }

func policyExplainCmd() *cobra.Command {
	var f policyFlags
	var cert, device, user, issuer string
	var ous, orgs []string
	cmd := &cobra.Command{
		Use:   "explain (--cert FILE | --device NAME [--ou G ...]) DST[:PORT/PROTO]",
		Short: "say which policies match an identity and whether they allow a destination",
		Long: `Prints, for a device certificate (--cert) or an identity described by flags
(--device CN, --ou, --o, --user), every policy and whether its match selects
the identity (key by key), the allow rule that admits the destination or that
none does, whether the allowlists (tls.allow_fingerprints, tls.allow_subjects)
and the CRL (--crl, or the config's tls.crl; with --cert) let the device in,
and the verdict. A CA certificate (ca.crt given for a device's) is said to
be one and denied, as the gateway refuses it (reason ca-leaf). DST is ADDR, ADDR:PORT/tcp, ADDR:PORT/udp or ADDR/icmp; a
bare ADDR asks whether some traffic to it is allowed. The verdict is the
gateway's own packet filter and trust steps. An address of the gateway
itself (its tunnel address, its listeners', and with --local-addresses this
machine's) is allowed only by a rule naming it alone ("10.0.0.2 tcp/22").
Exit status: 0 allow, 1 deny, 2 error (bad usage, unreadable config,
certificate or CRL), like grep.`,
		Example: `  sallyport policy explain -c /etc/sallyport/server.toml --device alice --ou eng 10.0.0.5:22/tcp
  sallyport policy explain -c server.toml --cert alice.crt 10.0.0.5/icmp`,
		Args: cmdutil.ExactArgs(1, "destination (ADDR[:PORT/PROTO])"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (cert == "") == (device == "") {
				return cmdutil.Usagef("give --cert FILE or --device NAME")
			}
			if cert != "" && (len(ous) > 0 || len(orgs) > 0 || user != "" || issuer != "") {
				return cmdutil.Usagef("--ou, --o, --user and --issuer describe an identity without a certificate; not with --cert")
			}
			dst, err := policy.ParseDestination(args[0])
			if err != nil {
				return cmdutil.Usagef("%v", err)
			}
			set, gates, err := f.load()
			if err != nil {
				return err
			}
			id := policy.IdentityFor(device, user, ous, orgs, issuer)
			var certs []*x509.Certificate
			if cert != "" {
				if id, certs, err = policy.IdentityOfFile(cert); err != nil {
					return errExit2(err)
				}
			}
			e := set.Explain(id, certs, dst, gates...)
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "identity: cn=%q ou=%v o=%v user=%q issuer=%q\n", id.Device, id.Groups, id.Orgs, id.User, id.Issuer)
			if len(certs) > 0 && certs[0].IsCA {
				// The "certificate:" line below refuses it; say at once why
				// nothing else here is about a device.
				fmt.Fprintf(out, "%s is a CA certificate, not a device certificate: the gateway refuses it whatever the policies say\n", cert)
			}
			fmt.Fprint(out, e.Format())
			if !e.Allowed {
				return cmdutil.ExitError{Code: 1}
			}
			return nil
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&cert, "cert", "", "device certificate (PEM)")
	cmd.Flags().StringVar(&device, "device", "", "device name (certificate CN)")
	cmd.Flags().StringArrayVar(&ous, "ou", nil, "group (certificate OU); repeat for several")
	cmd.Flags().StringArrayVar(&orgs, "o", nil, "organization (certificate O); repeat for several")
	cmd.Flags().StringVar(&user, "user", "", "user (certificate UID)")
	cmd.Flags().StringVar(&issuer, "issuer", "", "issuer DN, for policies that match on issuer")
	return cmd
}

func policyTestCmd() *cobra.Command {
	var f policyFlags
	cmd := &cobra.Command{
		Use:   "test CASES.toml",
		Short: "check a table of expected verdicts against the policies",
		Long: `Runs every [[case]] of CASES.toml (an identity, a destination and the verdict
wanted) against the policies of server.toml, its allowlists and its CRL
(--crl, or tls.crl; for cases with a cert) and prints one line per case.
Exit status: 0 when every case passes, 1 when one does not (with what was
wanted, what the gateway gives and why), 2 on an error (bad usage, an
unreadable config, cases file, certificate or CRL). A case:

  [[case]]
  name = "alice reaches ssh"     # optional
  device = "alice"               # or cert = "alice.crt" (relative to this file)
  ou = ["eng"]                   # also o, user, issuer
  dst = "10.0.0.5:22/tcp"        # ADDR, ADDR:PORT/tcp|udp, ADDR/icmp
  want = "allow"                 # or "deny"
  policies = ["engineering"]     # optional: exactly these match`,
		Example: "  sallyport policy test -c /etc/sallyport/server.toml policy-cases.toml",
		Args:    cmdutil.ExactArgs(1, "cases file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, gates, err := f.load()
			if err != nil {
				return err
			}
			cases, err := policy.LoadCases(args[0])
			if err != nil {
				return errExit2(err)
			}
			text, failed, errs := policy.Report(set.Run(cases, gates...))
			fmt.Fprint(cmd.OutOrStdout(), text)
			switch {
			case errs > 0:
				return cmdutil.ExitError{Code: 2}
			case failed > 0:
				return cmdutil.ExitError{Code: 1}
			}
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

func serverCheckCmd() *cobra.Command {
	var config, as string
	var creds []string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "validate server.toml and every file it names, without starting",
		Long: `Loads server.toml and everything it names (gateway certificate and key and
the key's permissions, client CA, CRL, policies, allowlists, static devices)
exactly as a start or reload does, opening nothing, like "nginx -t". A
reload runs the same load first and keeps the running configuration when it
fails.

Run as root on the config sallyport-server.service runs (its -c, by default
/etc/sallyport/server.toml), it then reads the files again as the unit's
User= (sallyport), with the unit's groups, credentials (LoadCredential=)
and sandbox (ProtectHome=, PrivateTmp=), since that is who reads them at
start; when that fails it names the directory or file that keeps the user
out and the chgrp/chmod that lets it in. --as USER checks as another user;
--as root checks as root only. Exit status: 0 valid, 1 not.`,
		Example: `  sallyport server check -c /etc/sallyport/server.toml
  sallyport server check -c /srv/vpn/server.toml --as sallyport`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			extra := map[string]string{}
			for _, c := range creds {
				dst, src, ok := strings.Cut(c, "=")
				if !ok || dst == "" || src == "" {
					return cmdutil.Usagef("--credential %q: want PATH=SOURCE", c)
				}
				extra[dst] = src
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			r, err := server.CheckCommand(config, as, extra, exe)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, w := range r.Warnings {
				fmt.Fprintf(out, "warning: %s\n", w)
			}
			fmt.Fprintf(out, "%s: ok (%s: %s; %s; CRL %s; renewal %s)\n", config, count(r.Policies, "policy", "policies"),
				strings.Join(policyNames(r.Config), ", "), count(r.CAs, "client CA certificate", "client CA certificates"), r.CRL, r.Renewal)
			if r.CheckedAs != "" {
				fmt.Fprintf(out, "files read as user %s: ok\n", r.CheckedAs)
			}
			if r.Note != "" {
				fmt.Fprintf(out, "note: %s\n", r.Note)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&config, "config", "c", "/etc/sallyport/server.toml", "gateway config file")
	cmd.Flags().StringVar(&as, "as", "auto", `also read the files as this user ("auto": the gateway unit's User= when root checks the unit's config; "root": as root only)`)
	cmd.Flags().StringArrayVar(&creds, "credential", nil, "PATH=SOURCE: read PATH from SOURCE, as systemd delivers a credential (used by the check as the unit's user)")
	_ = cmd.Flags().MarkHidden("credential")
	return cmd
}

func policyNames(c *server.Config) []string {
	out := make([]string, len(c.Policies))
	for i, p := range c.Policies {
		out[i] = p.Name
	}
	return out
}

func serverDrainCmd() *cobra.Command {
	f := adminFlags{isServer: true}
	cmd := &cobra.Command{
		Use:   "drain",
		Short: "move every device to another gateway, then stop this one",
		Long: `Drains the running gateway, as SIGTERM does: it stops accepting, closes every
session with reason "drain" (laptops with several gateways in "servers"
connect to the next one at once), waits up to drain_timeout for the sessions
to end, then exits with status 0.`,
		Example: "  sallyport server drain",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out struct {
				Sessions int    `json:"sessions"`
				Timeout  string `json:"drain_timeout"`
			}
			if _, err := f.call("drain", "", &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "draining %d sessions; the gateway exits when they have left (at most %s)\n", out.Sessions, out.Timeout)
			return nil
		},
	}
	f.add(cmd)
	return cmd
}

// count is "1 policy" or "2 policies".
func count(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}
