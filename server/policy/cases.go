package policy

// Policy tests (`sallyport policy test`): a table of identities,
// destinations and the verdict the admin expects, kept in the admin's own
// repository and run in their CI.

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"slices"
	"strings"

	"github.com/sallyport/sallyport/internal/tomlconf"
	"github.com/sallyport/sallyport/pki"
)

// Case is one [[case]] of a CASES.toml file. The identity is a certificate
// (cert, relative to the cases file) or the attributes given here.
type Case struct {
	Name   string   `toml:"name"`
	Cert   string   `toml:"cert"`
	Device string   `toml:"device"` // certificate CN
	User   string   `toml:"user"`
	OU     []string `toml:"ou"`
	O      []string `toml:"o"`
	Issuer string   `toml:"issuer"`
	Dst    string   `toml:"dst"`  // see ParseDestination
	Want   string   `toml:"want"` // "allow" or "deny"
	// Policies, when given, must be exactly the matching policy names.
	Policies []string `toml:"policies"`
}

// Cases is a CASES.toml file.
type Cases struct {
	Case []Case `toml:"case"`
}

// LoadCases reads and checks a cases file; cert paths are made relative to
// it.
func LoadCases(path string) ([]Case, error) {
	var cs Cases
	if err := tomlconf.Load(path, &cs); err != nil {
		return nil, err
	}
	if len(cs.Case) == 0 {
		return nil, fmt.Errorf("%s: no [[case]] tables", path)
	}
	for i := range cs.Case {
		c := &cs.Case[i]
		if c.Name == "" {
			c.Name = fmt.Sprintf("case %d", i+1)
		}
		if (c.Cert == "") == (c.Device == "") {
			return nil, fmt.Errorf("%s: [[case]] %q: give exactly one of \"cert\" or \"device\"", path, c.Name)
		}
		if c.Cert != "" {
			c.Cert = tomlconf.Resolve(path, c.Cert)
		}
		if c.Want != "allow" && c.Want != "deny" {
			return nil, fmt.Errorf("%s: [[case]] %q: key \"want\" is %q, not \"allow\" or \"deny\"", path, c.Name, c.Want)
		}
		if _, err := ParseDestination(c.Dst); err != nil {
			return nil, fmt.Errorf("%s: [[case]] %q: key \"dst\": %w", path, c.Name, err)
		}
	}
	return cs.Case, nil
}

// IdentityFor is the identity of a certificate with these subject
// attributes, for explaining or testing a policy without one.
func IdentityFor(device, user string, ous, orgs []string, issuer string) pki.Identity {
	subj := pkix.Name{CommonName: device, OrganizationalUnit: ous, Organization: orgs}
	if user != "" {
		// Where a parsed certificate has it (Names), so Subject reads the same.
		subj.Names = []pkix.AttributeTypeAndValue{{Type: pki.OIDUserID, Value: user}}
	}
	return pki.Identity{Device: device, User: user, Groups: ous, Orgs: orgs, Subject: pki.NameString(subj), Issuer: issuer}
}

// IdentityOfFile is the identity of the first certificate in a PEM file,
// and every certificate of the file (leaf first).
func IdentityOfFile(path string) (pki.Identity, []*x509.Certificate, error) {
	certs, err := pki.LoadCertificates(path)
	if err != nil {
		return pki.Identity{}, nil, fmt.Errorf("load certificate %s: %w", path, err)
	}
	return pki.IdentityOf(certs[0]), certs, nil
}

// Result is one case's outcome.
type Result struct {
	Case        Case
	Explanation Explanation
	Err         error // the case could not be evaluated (certificate unreadable)
	Pass        bool
}

// Run evaluates every case against the set and the gates.
func (s *Set) Run(cases []Case, gates ...Gate) []Result {
	out := make([]Result, 0, len(cases))
	for _, c := range cases {
		r := Result{Case: c}
		id := IdentityFor(c.Device, c.User, c.OU, c.O, c.Issuer)
		var certs []*x509.Certificate
		if c.Cert != "" {
			id, certs, r.Err = IdentityOfFile(c.Cert)
		}
		dst, err := ParseDestination(c.Dst)
		if r.Err == nil {
			r.Err = err
		}
		if r.Err == nil {
			r.Explanation = s.Explain(id, certs, dst, gates...)
			r.Pass = r.Explanation.Verdict() == c.Want && (c.Policies == nil || slices.Equal(c.Policies, nonNil(r.Explanation.Matched)))
		}
		out = append(out, r)
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Report writes one line per case ("ok" or "FAIL") and, under each
// failure, what was wanted and what the policies give; it returns the
// number of failures and, among them, of cases that could not be
// evaluated (an unreadable certificate: an error, not a verdict).
func Report(results []Result) (text string, failed, errs int) {
	var b strings.Builder
	for _, r := range results {
		c := r.Case
		who := c.Device
		if c.Cert != "" {
			who = c.Cert
		}
		if r.Pass {
			fmt.Fprintf(&b, "ok    %s: %s -> %s: %s\n", c.Name, who, c.Dst, c.Want)
			continue
		}
		failed++
		fmt.Fprintf(&b, "FAIL  %s: %s -> %s\n", c.Name, who, c.Dst)
		if r.Err != nil {
			errs++
			fmt.Fprintf(&b, "      error: %v\n", r.Err)
			continue
		}
		e := r.Explanation
		if e.Verdict() != c.Want {
			fmt.Fprintf(&b, "      - want %s\n      + got  %s\n", c.Want, e.Verdict())
		}
		if c.Policies != nil && !slices.Equal(c.Policies, nonNil(e.Matched)) {
			fmt.Fprintf(&b, "      - want policies %s\n      + got  policies %s\n", quoteList(c.Policies), quoteList(e.Matched))
		}
		switch g := e.refusedBy(); {
		case g != nil && e.Verdict() != c.Want:
			fmt.Fprintf(&b, "      because %s: %s\n", g.Name, g.Line)
		case len(e.Matched) == 0:
			b.WriteString("      because no policy matches this identity\n")
		case e.Rule != "":
			fmt.Fprintf(&b, "      because rule %q of policy %q admits it\n", e.Rule, e.RulePolicy)
		default:
			fmt.Fprintf(&b, "      because no allow rule of %s admits it\n", quoteList(e.Matched))
		}
	}
	fmt.Fprintf(&b, "%d cases, %d failed\n", len(results), failed)
	return b.String(), failed, errs
}
