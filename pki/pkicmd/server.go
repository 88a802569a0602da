package pkicmd

import (
	"flag"
	"fmt"
	"io"
	"os/user"
	"strconv"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/ca"
)

func init() {
	register(&command{
		name:    "server",
		summary: "issue the gateway's certificate (serverAuth, DNS/IP names)",
		usage:   "--name HOST [--dns NAME]... [--ip ADDR]... [--days N] [--key TYPE]",
		help: `Issue the gateway (server) certificate: CN and a DNS SAN for --name (an IP
SAN when --name is an address), extra --dns and --ip SANs, serverAuth EKU
only. Writes servers/HOST.crt (leaf + intermediate) and servers/HOST.key:
mode 0640 group sallyport when the PKI directory is shared with the
gateway's group (see pki init --help), else 0600.`,
		example: `  sallyport pki server --name vpn.acme.example --ip 203.0.113.1`,
		flags: func(fs *flag.FlagSet) func([]string, io.Writer, io.Writer) error {
			name := fs.String("name", "", "gateway host name (required)")
			var dns, ips listFlag
			fs.Var(&dns, "dns", "extra DNS name (repeatable)")
			fs.Var(&ips, "ip", "IP address SAN (repeatable)")
			issueFlags := addIssueFlags(fs, ca.DefaultServerDays)
			return func(pos []string, stdout, stderr io.Writer) error {
				if err := noArgs(pos); err != nil {
					return err
				}
				if *name == "" {
					return usagef("--name is required")
				}
				ipList, err := parseIPs(ips)
				if err != nil {
					return err
				}
				o, err := issueFlags()
				if err != nil {
					return err
				}
				o.Name, o.DNSNames, o.IPs = *name, dns, ipList
				is, err := ca.New(dirOf(fs)).IssueServer(o)
				if err != nil {
					return err
				}
				printIssued(stdout, stderr, "server", is)
				if is.KeyGroup == "" && groupExists(pki.KeyGroup) {
					fmt.Fprintf(stderr, "note: %s is not shared with group %s, so the packaged gateway (user %s) cannot read this key: "+
						"make the PKI inside /etc/sallyport, or see docs/admin-guide.md (\"The gateway's key\")\n", dirOf(fs), pki.KeyGroup, pki.KeyGroup)
				}
				return nil
			}
		},
	})
}

// addIssueFlags adds --key, --days, --not-before, --not-after.
func addIssueFlags(fs *flag.FlagSet, defDays int) func() (ca.IssueOptions, error) {
	key := fs.String("key", "ecdsa", "key type: ecdsa (P-256), ed25519 or rsa3072")
	validity := addValidityFlags(fs, defDays)
	return func() (ca.IssueOptions, error) {
		kt, err := ca.ParseKeyType(*key)
		if err != nil {
			return ca.IssueOptions{}, usagef("%v", err)
		}
		o := validity()
		o.Key = kt
		return o, nil
	}
}

// addValidityFlags adds --days, --not-before, --not-after (for sign, whose
// key comes from the CSR).
func addValidityFlags(fs *flag.FlagSet, defDays int) func() ca.IssueOptions {
	days := &intFlag{v: defDays}
	fs.Var(days, "days", "lifetime in days (never past the issuing CA's)")
	var nb, na timeFlag
	fs.Var(&nb, "not-before", "exact start of validity, RFC 3339 (default: now - 5m)")
	fs.Var(&na, "not-after", "exact end of validity, RFC 3339 (overrides --days)")
	return func() ca.IssueOptions {
		return ca.IssueOptions{Days: days.v, NotBefore: nb.t, NotAfter: na.t}
	}
}

func printIssued(stdout, stderr io.Writer, what string, is *ca.Issued) {
	for _, w := range is.Warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	fmt.Fprintf(stdout, "issued %s certificate for %s\n", what, is.Record.Name)
	fmt.Fprintf(stdout, "serial: %s\n", is.Record.Serial)
	fmt.Fprintf(stdout, "fingerprint: %s\n", is.Record.Fingerprint)
	fmt.Fprintf(stdout, "valid: %s to %s\n", fmtTime(is.Record.NotBefore), fmtTime(is.Record.NotAfter))
	fmt.Fprintf(stdout, "certificate: %s\n", is.CertPath)
	if is.Record.KeyOrigin != "" {
		fmt.Fprintf(stdout, "key origin: %s (vouched for by you, recorded in the certificate)\n", is.Record.KeyOrigin)
	}
	switch {
	case is.KeyPath == "":
	case is.KeyGroup != "":
		fmt.Fprintf(stdout, "key: %s (mode 0640, group %s: the gateway reads it)\n", is.KeyPath, is.KeyGroup)
	default:
		fmt.Fprintf(stdout, "key: %s (mode 0600)\n", is.KeyPath)
	}
}

// groupExists reports whether the group exists on this machine (the package
// creates sallyport: a gateway is installed here).
func groupExists(name string) bool {
	_, err := user.LookupGroup(name)
	return err == nil
}

// intFlag is an int flag that knows whether it was given (the default of
// --days depends on the PKI: shortLife).
type intFlag struct {
	v   int
	set bool
}

func (f *intFlag) String() string {
	if f == nil {
		return "0"
	}
	return strconv.Itoa(f.v)
}

// Type is what --help shows for the value.
func (f *intFlag) Type() string { return "int" }

func (f *intFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("want a whole number, got %q", s)
	}
	f.v, f.set = n, true
	return nil
}
