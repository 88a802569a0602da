// Package policy maps a device certificate's identity to the network access
// it is granted: which destinations, protocols and ports its packets may
// reach, and which routes and DNS settings are pushed to it.
//
// Policies come from the server config's [[policy]] tables. Compile checks
// and compiles them once; Set.Lookup finds every policy whose match selects
// an identity and returns their union as an immutable Grant, whose Allows
// method is the per-packet filter (no allocation).
package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// Match selects identities. Every key that is given must match (AND);
// within a key, any one value matching any of the identity's values is
// enough (OR). A key given with no values is an error, as is a Match with
// no keys (write cn = ["*"] to select every device).
//
// cn, ou, o, user, san_dns, san_email, san_uri and issuer match a value
// equal to them or, as path.Match globs ("*" does not cross "/", "\"
// escapes), matching them; san_dns and san_email compare case
// insensitively. issuer matches the issuer's full distinguished name as
// printed by Go ("CN=Sallyport CA,O=Acme") or just its CN value.
// fingerprint (SHA-256 of the certificate) and serial are compared exactly
// after normalisation, so any common spelling works (colons, case, 0x, d:
// for decimal serials; see pki.NormalizeFingerprint and pki.ParseSerial).
type Match struct {
	CN          []string `toml:"cn"`
	OU          []string `toml:"ou"`
	O           []string `toml:"o"`
	User        []string `toml:"user"`
	SANDNS      []string `toml:"san_dns"`
	SANEmail    []string `toml:"san_email"`
	SANURI      []string `toml:"san_uri"`
	Issuer      []string `toml:"issuer"`
	Fingerprint []string `toml:"fingerprint"`
	Serial      []string `toml:"serial"`
}

// Policy is one [[policy]] table of the server config.
type Policy struct {
	Name  string   `toml:"name"`  // unique, non-empty; shown in logs and status
	Match Match    `toml:"match"` // which devices it applies to
	Allow []string `toml:"allow"` // see ParseAllow
	// Routes pushed to the device (CIDR or bare address). When the key is
	// absent (nil) they default to the allow rules' prefixes; an explicit
	// empty list pushes none.
	Routes []string `toml:"routes"`
	// DNS entries: IP addresses are resolvers, anything else a search domain.
	DNS []string `toml:"dns"`
	// KillSwitch, when set, is pushed to the devices: true switches the
	// laptop's kill switch on whatever its file says, false turns off the
	// laptop's default (on for a full tunnel) unless its file says true.
	KillSwitch *bool `toml:"kill_switch"`
	// RequireHardwareKey: the devices this policy matches must hold their
	// key in hardware (a TPM or a PKCS#11 token), as their certificate's
	// issuer recorded it (pki.KeyOriginOf: "pki sign --key-origin"). A
	// matching device without it is refused (hardware-key-required), not
	// just left without this policy: "eng laptops use TPM keys" holds.
	RequireHardwareKey bool `toml:"require_hardware_key"`
}

// Grant is the union of the policies matching one identity. Grants are
// shared and immutable: do not modify the slices.
type Grant struct {
	Names         []string       // matching policy names, in config order
	Allow         []string       // canonical allow rules (Rule.String), deduplicated
	Routes        []netip.Prefix // routes to push, masked, deduplicated
	DNS           []netip.Addr   // resolvers to push, deduplicated
	SearchDomains []string       // search domains, lowercase, deduplicated
	// KillSwitch is true when a matching policy sets kill_switch = true,
	// else false when one sets it false, else nil (left to the laptop).
	KillSwitch *bool
	// RequireHardwareKey names the first matching policy that demands a
	// hardware-held device key ("" when none does).
	RequireHardwareKey string
	filter             filter
	// named is the filter of the rules that name one address alone: the
	// only ones that open an address of own (own.go).
	named filter
	own   *Own // nil: no address is treated apart (but loopback)
}

// Allows reports whether a packet from the device to p.Dst with p's
// protocol and destination port is permitted. ICMP rules match ICMP for
// IPv4 and ICMPv6 for IPv6 destinations. A non-first fragment (no ports) is
// allowed only by a rule covering all ports of its protocol. An address of
// the gateway's own (own.go) is reached only through a rule naming it
// alone. A nil Grant allows nothing. Allows does not allocate.
func (g *Grant) Allows(p *packet.Info) bool {
	if g == nil || !g.filter.allows(p) {
		return false
	}
	return !g.own.Has(p.Dst) || g.named.allows(p)
}

// AllowsSome reports whether the filter lets some packet to a through (any
// protocol, any port): the verdict `policy explain` gives for a bare
// address. A nil Grant allows nothing.
func (g *Grant) AllowsSome(a netip.Addr) bool {
	if g == nil || !g.filter.allowsSome(a) {
		return false
	}
	return !g.own.Has(a) || g.named.allowsSome(a)
}

// Own reports whether a is one of the gateway's own addresses, which only
// a rule naming it alone opens.
func (g *Grant) Own(a netip.Addr) bool { return g.own.Has(a) }

// Equal reports whether g and o grant the same access, routes and DNS
// (policy names included).
func (g *Grant) Equal(o *Grant) bool {
	if g == nil || o == nil {
		return g == o
	}
	return slices.Equal(g.Names, o.Names) && slices.Equal(g.Allow, o.Allow) &&
		slices.Equal(g.Routes, o.Routes) && slices.Equal(g.DNS, o.DNS) &&
		slices.Equal(g.SearchDomains, o.SearchDomains) && (g.KillSwitch == nil) == (o.KillSwitch == nil) &&
		(g.KillSwitch == nil || *g.KillSwitch == *o.KillSwitch)
}

type compiled struct {
	name   string
	match  matcher
	rules  []Rule
	routes []netip.Prefix
	dns    []netip.Addr
	search []string
	kill   *bool
	hwkey  bool
}

// Set is a compiled list of policies. It is safe for concurrent use.
type Set struct {
	policies []compiled
	own      *Own // the gateway's own addresses (nil: none but loopback)

	mu    sync.Mutex
	cache map[string]*Grant // key: indices of the matching policies
}

// maxCached bounds the number of distinct policy combinations cached.
const maxCached = 4096

// Compile validates ps and compiles them into a Set. Errors name the
// policy and the offending entry. Only loopback addresses are treated as
// the gateway's own; the gateway uses CompileOwn.
func Compile(ps []Policy) (*Set, error) { return CompileOwn(ps, nil) }

// CompileOwn is Compile with the gateway's own addresses: its grants open
// an address of own only through a rule naming it alone (own.go). own may
// be changed later; the grants follow.
func CompileOwn(ps []Policy, own *Own) (*Set, error) {
	s := &Set{cache: map[string]*Grant{}, own: own}
	seen := map[string]bool{}
	for i, p := range ps {
		name := strings.TrimSpace(p.Name)
		if name == "" {
			return nil, &Error{Index: i, Key: "name", Err: errors.New("name is empty")}
		}
		if seen[name] {
			return nil, &Error{Index: i, Name: name, Key: "name", Err: errors.New("duplicate name")}
		}
		seen[name] = true
		c, err := compile(name, p)
		if err != nil {
			e := &Error{Index: i, Name: name, Err: err}
			var k keyError
			if errors.As(err, &k) {
				e.Key = k.key
			}
			return nil, e
		}
		s.policies = append(s.policies, c)
	}
	return s, nil
}

// Error is a policy that does not compile: the Index-th of the list (from
// 0), its Name ("" when that is what is wrong), and the Key whose value Err
// is about ("allow", "routes", "dns", "name", "match" or "match.ou"; ""
// when not known), so a config loader can put it at its line.
type Error struct {
	Index     int
	Name, Key string
	Err       error
}

func (e *Error) Error() string {
	if e.Name == "" {
		return fmt.Sprintf("policy #%d: %v", e.Index+1, e.Err)
	}
	return fmt.Sprintf("policy %q: %v", e.Name, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// keyError is an error about the value of one key of a policy.
type keyError struct {
	key string
	err error
}

func (k keyError) Error() string { return k.err.Error() }
func (k keyError) Unwrap() error { return k.err }

func compile(name string, p Policy) (compiled, error) {
	c := compiled{name: name, kill: p.KillSwitch, hwkey: p.RequireHardwareKey}
	var err error
	if c.match, err = compileMatch(p.Match); err != nil {
		return c, err // a keyError already
	}
	var defRoutes []netip.Prefix
	for _, a := range p.Allow {
		rs, err := ParseAllow(a)
		if err != nil {
			return c, keyError{"allow", fmt.Errorf("allow %q: %w", a, err)}
		}
		for _, r := range rs {
			c.rules = append(c.rules, r)
			defRoutes = appendUnique(defRoutes, r.Prefix)
		}
	}
	if p.Routes == nil {
		c.routes = defRoutes
	}
	for _, r := range p.Routes {
		pfx, err := parsePrefix(strings.TrimSpace(r), false)
		if err != nil {
			return c, keyError{"routes", fmt.Errorf("routes %q: %w", r, err)}
		}
		c.routes = appendUnique(c.routes, pfx[0])
	}
	for _, d := range p.DNS {
		d = strings.TrimSpace(d)
		if a, err := netip.ParseAddr(d); err == nil {
			if a.Zone() != "" {
				return c, keyError{"dns", fmt.Errorf("dns %q: zoned address not supported", d)}
			}
			c.dns = appendUnique(c.dns, a.Unmap())
			continue
		}
		dom, err := normalizeDomain(d)
		if err != nil {
			return c, keyError{"dns", fmt.Errorf("dns %q: %w", d, err)}
		}
		c.search = appendUnique(c.search, dom)
	}
	return c, nil
}

func appendUnique[T comparable](s []T, v T) []T {
	if slices.Contains(s, v) {
		return s
	}
	return append(s, v)
}

// normalizeDomain checks a search domain (letters, digits, '-', '_'; labels
// of 1-63 bytes; at most 253 bytes; last label not numeric) and lowercases
// it, dropping one trailing dot.
func normalizeDomain(s string) (string, error) {
	d := strings.ToLower(strings.TrimSuffix(s, "."))
	if d == "" {
		return "", errors.New("neither an IP address nor a domain name")
	}
	if len(d) > 253 {
		return "", errors.New("domain name longer than 253 bytes")
	}
	labels := strings.Split(d, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return "", errors.New("neither an IP address nor a domain name (bad label length)")
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("domain label %q starts or ends with '-'", l)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("neither an IP address nor a domain name (character %q)", c)
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "", errors.New("not a valid IP address, and a domain cannot end in a numeric label")
	}
	return d, nil
}

// Names returns the policy names in config order.
func (s *Set) Names() []string {
	out := make([]string, len(s.policies))
	for i := range s.policies {
		out[i] = s.policies[i].name
	}
	return out
}

// Lookup returns the union Grant of every policy matching id, or nil when
// none does. Identities matching the same policies share one Grant.
func (s *Set) Lookup(id pki.Identity) *Grant {
	if s == nil {
		return nil
	}
	v := newIDView(&id)
	var key []byte
	for i := range s.policies {
		if s.policies[i].match.matches(&v) {
			key = append(key, byte(i), byte(i>>8), byte(i>>16))
		}
	}
	if key == nil {
		return nil
	}
	s.mu.Lock()
	g := s.cache[string(key)]
	s.mu.Unlock()
	if g != nil {
		return g
	}
	g = &Grant{}
	var rules []Rule
	for i := 0; i < len(key); i += 3 {
		c := &s.policies[int(key[i])|int(key[i+1])<<8|int(key[i+2])<<16]
		g.Names = append(g.Names, c.name)
		for _, r := range c.rules {
			if !slices.Contains(rules, r) {
				rules = append(rules, r)
				g.Allow = append(g.Allow, r.String())
			}
		}
		for _, r := range c.routes {
			g.Routes = appendUnique(g.Routes, r)
		}
		for _, d := range c.dns {
			g.DNS = appendUnique(g.DNS, d)
		}
		for _, d := range c.search {
			g.SearchDomains = appendUnique(g.SearchDomains, d)
		}
		if c.kill != nil && (g.KillSwitch == nil || *c.kill) {
			g.KillSwitch = c.kill
		}
		if c.hwkey && g.RequireHardwareKey == "" {
			g.RequireHardwareKey = c.name
		}
	}
	g.filter = buildFilter(rules)
	g.named = buildFilter(hostRules(rules))
	g.own = s.own
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.cache[string(key)]; old != nil {
		return old
	}
	if len(s.cache) < maxCached {
		s.cache[string(key)] = g
	}
	return g
}

// matcher is a compiled Match; nil slices are keys not given.
type matcher struct {
	cn, ou, o, user, dns, email, uri, issuer []string // globs
	fingerprint, serial                      []string // canonical
}

func compileMatch(m Match) (matcher, error) {
	var c matcher
	var err error
	any := false
	glob := func(key string, vals []string, lower bool) []string {
		if err != nil || vals == nil {
			return nil
		}
		any = true
		if len(vals) == 0 {
			err = keyError{"match." + key, fmt.Errorf("match.%s has no values", key)}
			return nil
		}
		out := make([]string, 0, len(vals))
		for _, v := range vals {
			if lower {
				v = strings.TrimSuffix(strings.ToLower(v), ".")
			}
			if v == "" {
				err = keyError{"match." + key, fmt.Errorf("match.%s: empty pattern", key)}
				return nil
			}
			if _, e := path.Match(v, ""); e != nil {
				err = keyError{"match." + key, fmt.Errorf("match.%s %q: bad glob: %w", key, v, e)}
				return nil
			}
			out = append(out, v)
		}
		return out
	}
	c.cn = glob("cn", m.CN, false)
	c.ou = glob("ou", m.OU, false)
	c.o = glob("o", m.O, false)
	c.user = glob("user", m.User, false)
	c.dns = glob("san_dns", m.SANDNS, true)
	c.email = glob("san_email", m.SANEmail, true)
	c.uri = glob("san_uri", m.SANURI, false)
	c.issuer = glob("issuer", m.Issuer, false)
	if err != nil {
		return c, err
	}
	norm := func(key string, vals []string, f func(string) (string, error)) []string {
		if err != nil || vals == nil {
			return nil
		}
		any = true
		if len(vals) == 0 {
			err = keyError{"match." + key, fmt.Errorf("match.%s has no values", key)}
			return nil
		}
		out := make([]string, 0, len(vals))
		for _, v := range vals {
			n, e := f(v)
			if e != nil {
				err = keyError{"match." + key, fmt.Errorf("match.%s %q: %w", key, v, e)}
				return nil
			}
			out = append(out, n)
		}
		return out
	}
	c.fingerprint = norm("fingerprint", m.Fingerprint, pki.NormalizeFingerprint)
	c.serial = norm("serial", m.Serial, func(s string) (string, error) {
		n, err := pki.ParseSerial(s)
		if err != nil {
			return "", err
		}
		return pki.FormatSerial(n), nil
	})
	if err != nil {
		return c, err
	}
	if !any {
		return c, keyError{"match", errors.New(`match selects nothing: give at least one key (cn = ["*"] selects every device)`)}
	}
	return c, nil
}

// idView is an identity with the derived values matching needs.
type idView struct {
	id          *pki.Identity
	user        []string
	dns, emails []string
	issuer      []string // full DN and, if present, its CN value
	fingerprint []string
	serial      []string
}

func newIDView(id *pki.Identity) idView {
	v := idView{id: id}
	if id.User != "" {
		v.user = []string{id.User}
	}
	for _, d := range id.DNSNames {
		v.dns = append(v.dns, strings.TrimSuffix(strings.ToLower(d), "."))
	}
	for _, e := range id.Emails {
		v.emails = append(v.emails, strings.ToLower(e))
	}
	if id.Issuer != "" {
		v.issuer = []string{id.Issuer}
		if cn, ok := dnCN(id.Issuer); ok {
			v.issuer = append(v.issuer, cn)
		}
	}
	if id.Fingerprint != "" {
		v.fingerprint = []string{strings.ToLower(id.Fingerprint)}
	}
	if id.Serial != "" {
		v.serial = []string{strings.ToLower(id.Serial)}
	}
	return v
}

// dnCN extracts the CN value from an RFC 4514 string as printed by
// pkix.Name.String (attributes separated by unescaped ',' or '+').
func dnCN(dn string) (string, bool) {
	var val strings.Builder
	start := true
	inCN := false
	for i := 0; i < len(dn); i++ {
		c := dn[i]
		if start {
			if strings.HasPrefix(dn[i:], "CN=") {
				inCN = true
				i += 2
			}
			start = false
			continue
		}
		switch {
		case c == '\\' && i+1 < len(dn):
			i++
			if inCN {
				val.WriteByte(dn[i])
			}
		case c == ',' || c == '+':
			if inCN {
				return val.String(), true
			}
			start = true
		default:
			if inCN {
				val.WriteByte(c)
			}
		}
	}
	return val.String(), inCN
}

func anyGlob(patterns, vals []string) bool {
	for _, p := range patterns {
		for _, v := range vals {
			if p == v {
				return true
			}
			if ok, _ := path.Match(p, v); ok {
				return true
			}
		}
	}
	return false
}

func anyEqual(want, vals []string) bool {
	for _, w := range want {
		if slices.Contains(vals, w) {
			return true
		}
	}
	return false
}

func (m *matcher) matches(v *idView) bool {
	return (m.cn == nil || anyGlob(m.cn, []string{v.id.Device})) &&
		(m.ou == nil || anyGlob(m.ou, v.id.Groups)) &&
		(m.o == nil || anyGlob(m.o, v.id.Orgs)) &&
		(m.user == nil || anyGlob(m.user, v.user)) &&
		(m.dns == nil || anyGlob(m.dns, v.dns)) &&
		(m.email == nil || anyGlob(m.email, v.emails)) &&
		(m.uri == nil || anyGlob(m.uri, v.id.URIs)) &&
		(m.issuer == nil || anyGlob(m.issuer, v.issuer)) &&
		(m.fingerprint == nil || anyEqual(m.fingerprint, v.fingerprint)) &&
		(m.serial == nil || anyEqual(m.serial, v.serial))
}

// Routes returns the routes every policy pushes, masked and deduplicated,
// in config order (the gateway NATs out of the interfaces behind them
// when tunnel.masquerade is "auto").
func (s *Set) Routes() []netip.Prefix {
	var out []netip.Prefix
	for _, c := range s.policies {
		for _, r := range c.routes {
			if !slices.Contains(out, r) {
				out = append(out, r)
			}
		}
	}
	return out
}
