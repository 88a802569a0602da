package policy

// Policy as code (docs/policy.md): Explain says, for one identity and one
// destination, which policies match and why, which allow rule admits the
// traffic, whether the other steps of the trust decision it is given
// (gates: the allowlists, the CRL) let the device in, and the verdict. The
// filter's part of the verdict is the packet filter's own (Grant.Allows on
// a packet built from the destination; Grant.AllowsSome for a bare
// address), so an explanation cannot disagree with the data plane.

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// Destination is what a device would send to: an address and, optionally,
// a protocol and (for TCP and UDP) a port.
type Destination struct {
	Addr  netip.Addr
	Proto uint8  // 0: not given (any rule covering the address counts)
	Port  uint16 // TCP/UDP destination port
}

// ParseDestination parses "ADDR", "ADDR:PORT/tcp", "ADDR:PORT/udp",
// "ADDR/icmp" (IPv6 addresses in brackets when a port follows:
// "[fd00::1]:53/udp").
func ParseDestination(s string) (Destination, error) {
	var d Destination
	host, proto, hasProto := strings.Cut(strings.TrimSpace(s), "/")
	proto = strings.ToLower(proto)
	port := ""
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		d.Addr = a
	} else {
		h, p, err := splitHostPort(host)
		if err != nil {
			return d, fmt.Errorf("destination %q: want ADDR, ADDR:PORT/tcp|udp or ADDR/icmp", s)
		}
		if d.Addr, err = netip.ParseAddr(h); err != nil {
			return d, fmt.Errorf("destination %q: %q is not an IP address", s, h)
		}
		port = p
	}
	d.Addr = d.Addr.Unmap()
	if d.Addr.Zone() != "" {
		return d, fmt.Errorf("destination %q: zoned addresses are not supported", s)
	}
	switch {
	case !hasProto && port == "":
		return d, nil
	case !hasProto:
		return d, fmt.Errorf("destination %q: a port needs a protocol (%s/tcp or %s/udp)", s, host, host)
	case proto == "tcp" || proto == "udp":
		if port == "" {
			return d, fmt.Errorf("destination %q: %s needs a port (ADDR:PORT/%s)", s, proto, proto)
		}
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return d, fmt.Errorf("destination %q: port %q is not 1-65535", s, port)
		}
		d.Port = uint16(n)
		d.Proto = packet.ProtoTCP
		if proto == "udp" {
			d.Proto = packet.ProtoUDP
		}
	case proto == "icmp" || proto == "icmpv6" || proto == "icmp6":
		if port != "" {
			return d, fmt.Errorf("destination %q: icmp has no port", s)
		}
		d.Proto = packet.ProtoICMP
		if d.Addr.Is6() {
			d.Proto = packet.ProtoICMPv6
		}
	default:
		return d, fmt.Errorf("destination %q: protocol %q is not tcp, udp or icmp", s, proto)
	}
	return d, nil
}

func splitHostPort(s string) (host, port string, err error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", errors.New("no port")
	}
	host, port = s[:i], s[i+1:]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	} else if strings.Contains(host, ":") {
		return "", "", errors.New("IPv6 address with a port must be in brackets")
	}
	return host, port, nil
}

// String is the canonical spelling ParseDestination accepts.
func (d Destination) String() string {
	switch d.Proto {
	case 0:
		return d.Addr.String()
	case packet.ProtoICMP, packet.ProtoICMPv6:
		return d.Addr.String() + "/icmp"
	}
	return netip.AddrPortFrom(d.Addr, d.Port).String() + "/" + protoName(d.Proto)
}

// KeyCheck is the outcome of one match key of a policy.
type KeyCheck struct {
	Key      string   // "ou", "cn", ...
	Patterns []string // as compiled
	Values   []string // the identity's values for the key
	OK       bool
}

// PolicyCheck says whether one policy selects the identity, key by key.
type PolicyCheck struct {
	Name    string
	Matched bool
	Keys    []KeyCheck
}

// Explanation is the answer of Explain.
type Explanation struct {
	Policies []PolicyCheck
	Matched  []string // names of the matching policies
	Dst      Destination
	// Rule is the first allow rule (canonical) of a matching policy that
	// admits Dst, and RulePolicy its policy; "" when none does.
	Rule, RulePolicy string
	// Covering lists the rules of matching policies whose prefix holds the
	// address but whose protocol or port does not fit (why a deny is one).
	Covering []string
	// Own is set when Dst is an address of the gateway itself: only a
	// rule naming it alone opens it (own.go).
	Own bool
	// Gates are the other steps of the trust decision (allowlists, CRL),
	// in the order given.
	Gates []GateResult
	// Filtered is the packet filter's verdict alone; Allowed is the
	// verdict: Filtered and every gate passed.
	Filtered, Allowed bool
}

// Gate is a step of the gateway's trust decision other than the policies
// (the allowlists, the CRL) that an explanation counts in its verdict.
// certs is the certificate file the identity came from (leaf first), nil
// when the identity was described by flags.
type Gate func(id pki.Identity, certs []*x509.Certificate) GateResult

// GateResult is a gate's answer: its name ("allowlist", "revocation"),
// whether the identity passes, and one line saying why.
type GateResult struct {
	Name string
	OK   bool
	Line string
}

// refusedBy is the first gate that refuses, or nil.
func (e *Explanation) refusedBy() *GateResult {
	for i := range e.Gates {
		if !e.Gates[i].OK {
			return &e.Gates[i]
		}
	}
	return nil
}

// Verdict is "allow" or "deny".
func (e *Explanation) Verdict() string {
	if e.Allowed {
		return "allow"
	}
	return "deny"
}

// Explain evaluates id (from certs, or nil when described by flags) and
// dst against the set and the gates.
func (s *Set) Explain(id pki.Identity, certs []*x509.Certificate, dst Destination, gates ...Gate) Explanation {
	e := Explanation{Dst: dst, Own: s.own.Has(dst.Addr)}
	for _, g := range gates {
		e.Gates = append(e.Gates, g(id, certs))
	}
	v := newIDView(&id)
	for i := range s.policies {
		c := &s.policies[i]
		pc := PolicyCheck{Name: c.name, Keys: c.match.explain(&v)}
		pc.Matched = c.match.matches(&v)
		e.Policies = append(e.Policies, pc)
		if !pc.Matched {
			continue
		}
		e.Matched = append(e.Matched, c.name)
		for _, r := range c.rules {
			if !r.Prefix.Contains(dst.Addr) {
				continue
			}
			// A gateway address is opened only by a rule naming it alone.
			admits := ruleAdmits(r, dst) && (!e.Own || r.Prefix.IsSingleIP())
			if e.Rule == "" && admits {
				e.Rule, e.RulePolicy = r.String(), c.name
			} else if !admits {
				e.Covering = append(e.Covering, fmt.Sprintf("%s (policy %q)", r, c.name))
			}
		}
	}
	g := s.Lookup(id)
	if dst.Proto == 0 {
		// No protocol asked: is some traffic to the address allowed?
		e.Filtered = g.AllowsSome(dst.Addr)
	} else {
		info := packet.Info{Proto: dst.Proto, Dst: dst.Addr, DstPort: dst.Port}
		if dst.Addr.Is4() {
			info.Version, info.Src = 4, netip.IPv4Unspecified()
		} else {
			info.Version, info.Src = 6, netip.IPv6Unspecified()
		}
		if dst.Proto == packet.ProtoICMP || dst.Proto == packet.ProtoICMPv6 {
			info.ICMPType = 8
			if dst.Proto == packet.ProtoICMPv6 {
				info.ICMPType = 128
			}
		}
		e.Filtered = g.Allows(&info)
	}
	if e.Filtered != (e.Rule != "") {
		// The filter is the truth; say so rather than name a wrong rule.
		e.Rule, e.RulePolicy = "", ""
	}
	e.Allowed = e.Filtered && e.refusedBy() == nil
	return e
}

// ruleAdmits reports whether r lets traffic to dst through (dst.Proto 0:
// any traffic).
func ruleAdmits(r Rule, dst Destination) bool {
	if !r.Prefix.Contains(dst.Addr) {
		return false
	}
	switch {
	case dst.Proto == 0 || r.Proto == 0:
		return true
	case r.Proto != dst.Proto:
		return false
	case dst.Proto == packet.ProtoTCP || dst.Proto == packet.ProtoUDP:
		return dst.Port >= r.PortLo && dst.Port <= r.PortHi
	}
	return true
}

// explain checks every key the match gives.
func (m *matcher) explain(v *idView) []KeyCheck {
	var out []KeyCheck
	add := func(key string, pats, vals []string, ok func() bool) {
		if pats != nil {
			out = append(out, KeyCheck{Key: key, Patterns: pats, Values: vals, OK: ok()})
		}
	}
	glob := func(key string, pats, vals []string) {
		add(key, pats, vals, func() bool { return anyGlob(pats, vals) })
	}
	glob("cn", m.cn, []string{v.id.Device})
	glob("ou", m.ou, v.id.Groups)
	glob("o", m.o, v.id.Orgs)
	glob("user", m.user, v.user)
	glob("san_dns", m.dns, v.dns)
	glob("san_email", m.email, v.emails)
	glob("san_uri", m.uri, v.id.URIs)
	glob("issuer", m.issuer, v.issuer)
	add("fingerprint", m.fingerprint, v.fingerprint, func() bool { return anyEqual(m.fingerprint, v.fingerprint) })
	add("serial", m.serial, v.serial, func() bool { return anyEqual(m.serial, v.serial) })
	return out
}

// Format writes the explanation as the lines `sallyport policy explain`
// prints.
func (e *Explanation) Format() string {
	var b strings.Builder
	fmt.Fprintf(&b, "destination: %s\n", e.Dst)
	if e.Dst.Proto == 0 {
		b.WriteString("  (no protocol given: the verdict is whether any traffic to the address is allowed)\n")
	}
	for _, p := range e.Policies {
		word := "does not match"
		if p.Matched {
			word = "matches"
		}
		fmt.Fprintf(&b, "policy %q %s:\n", p.Name, word)
		for _, k := range p.Keys {
			mark := "no "
			if k.OK {
				mark = "yes"
			}
			fmt.Fprintf(&b, "  %s %s %s against %s\n", mark, k.Key, quoteList(k.Patterns), quoteList(k.Values))
		}
	}
	switch {
	case len(e.Matched) == 0:
		b.WriteString("no policy matches this identity: the gateway refuses it at handshake (reason no-policy)\n")
	case e.Rule != "":
		fmt.Fprintf(&b, "allowed by rule %q of policy %q\n", e.Rule, e.RulePolicy)
	case e.Own:
		fmt.Fprintf(&b, "%s is an address of the gateway itself: only an allow rule naming it alone (\"%s ...\") opens it to devices; none of %s does for this traffic\n",
			e.Dst.Addr, e.Dst.Addr, quoteList(e.Matched))
		for _, c := range e.Covering {
			fmt.Fprintf(&b, "  covers the address but does not name it (or not this protocol/port): %s\n", c)
		}
	default:
		fmt.Fprintf(&b, "no allow rule of %s admits %s\n", quoteList(e.Matched), e.Dst)
		for _, c := range e.Covering {
			fmt.Fprintf(&b, "  covers the address but not this protocol/port: %s\n", c)
		}
	}
	for _, g := range e.Gates {
		fmt.Fprintf(&b, "%s: %s\n", g.Name, g.Line)
	}
	fmt.Fprintf(&b, "verdict: %s\n", e.Verdict())
	return b.String()
}

func quoteList(s []string) string {
	if len(s) == 0 {
		return "(none)"
	}
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = strconv.Quote(v)
	}
	return "[" + strings.Join(q, " ") + "]"
}
