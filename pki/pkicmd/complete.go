package pkicmd

import (
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/ca"
)

// Shell completion of flag values and arguments from the PKI itself: the
// devices and serials in the index of --dir, the revocation reasons, the
// key types. Completion reads the index the way `pki list` does (a shared
// lock, nothing written); when it cannot (no CA there, no permission), it
// offers nothing rather than an error.

// completions are the completion functions of one command's flags and
// positional arguments, given the PKI of its --dir.
type completions struct {
	flags map[string]func(p *ca.PKI) []string
	args  func(p *ca.PKI) []string
}

// commandCompletions by command name.
var commandCompletions = map[string]completions{
	"revoke": {
		flags: map[string]func(*ca.PKI) []string{"device": unrevokedDevices, "reason": func(*ca.PKI) []string { return pki.ReasonNames() }},
		args:  unrevokedSerials,
	},
	"bundle": {flags: map[string]func(*ca.PKI) []string{"device": validDevices}},
	"issue":  {flags: map[string]func(*ca.PKI) []string{"key": keyTypes}},
	"server": {flags: map[string]func(*ca.PKI) []string{"key": keyTypes}},
	"init":   {flags: map[string]func(*ca.PKI) []string{"key": keyTypes}},
}

func keyTypes(*ca.PKI) []string { return []string{"ecdsa", "ed25519", "rsa3072"} }

// records lists the index of p, or nothing when it cannot be read.
func records(p *ca.PKI) []ca.Record {
	recs, err := p.List()
	if err != nil {
		return nil
	}
	return recs
}

// unrevokedDevices are the devices with a certificate not yet revoked
// (expired ones too: revoking those is still worth doing).
func unrevokedDevices(p *ca.PKI) []string {
	return deviceNames(p, func(r ca.Record) bool { return !r.Revoked() })
}

// validDevices are the devices with a certificate valid now (what bundle
// can put in a profile).
func validDevices(p *ca.PKI) []string {
	now := time.Now()
	return deviceNames(p, func(r ca.Record) bool { return !r.Revoked() && now.Before(r.NotAfter) && !now.Before(r.NotBefore) })
}

func deviceNames(p *ca.PKI, keep func(ca.Record) bool) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range records(p) {
		if r.Kind == ca.KindDevice && keep(r) && !seen[r.Name] {
			seen[r.Name] = true
			out = append(out, r.Name)
		}
	}
	sort.Strings(out)
	return out
}

// unrevokedSerials are the serials not yet revoked, each described by its
// kind and name.
func unrevokedSerials(p *ca.PKI) []string {
	var out []string
	for _, r := range records(p) {
		if !r.Revoked() {
			out = append(out, r.Serial+"\t"+r.Kind+" "+r.Name)
		}
	}
	return out
}

// addCompletions registers the completions of command name on cc.
func addCompletions(cc *cobra.Command, name string) {
	c, ok := commandCompletions[name]
	if !ok {
		return
	}
	pkiOf := func(cmd *cobra.Command) *ca.PKI {
		dir := "./pki"
		if f := cmd.Flags().Lookup("dir"); f != nil && f.Value.String() != "" {
			dir = f.Value.String()
		}
		return ca.New(dir)
	}
	for flagName, f := range c.flags {
		// Every name here is a flag of the command (TestCompletion fails
		// otherwise), so registering cannot fail.
		_ = cc.RegisterFlagCompletionFunc(flagName, func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
			return f(pkiOf(cmd)), cobra.ShellCompDirectiveNoFileComp
		})
	}
	if c.args != nil {
		cc.ValidArgsFunction = func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return c.args(pkiOf(cmd)), cobra.ShellCompDirectiveNoFileComp
		}
	}
}
