package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/sallyport/sallyport/tunnel/packet"
)

// Rule is one parsed allow entry: traffic to Prefix with protocol Proto
// (0 = any protocol) and, for TCP and UDP, a destination port in
// [PortLo, PortHi].
type Rule struct {
	Prefix netip.Prefix // masked
	// Proto is 0 (any), packet.ProtoTCP, packet.ProtoUDP, or
	// packet.ProtoICMP / packet.ProtoICMPv6 matching the prefix's family.
	Proto          uint8
	PortLo, PortHi uint16 // 0-65535 when all ports; unused for icmp and any
}

// AllPorts reports whether the rule covers every port of its protocol
// (always true for ICMP and any-protocol rules).
func (r Rule) AllPorts() bool { return r.PortLo == 0 && r.PortHi == 65535 }

// String returns the canonical spelling of r, which ParseAllow accepts.
func (r Rule) String() string {
	s := r.Prefix.String()
	switch r.Proto {
	case 0:
		return s
	case packet.ProtoICMP, packet.ProtoICMPv6:
		return s + " icmp"
	}
	s += " " + protoName(r.Proto)
	switch {
	case r.AllPorts():
		return s
	case r.PortLo == r.PortHi:
		return s + "/" + strconv.Itoa(int(r.PortLo))
	}
	return s + "/" + strconv.Itoa(int(r.PortLo)) + "-" + strconv.Itoa(int(r.PortHi))
}

func protoName(p uint8) string {
	if p == packet.ProtoTCP {
		return "tcp"
	}
	return "udp"
}

// ParseAllow parses one allow entry:
//
//	"CIDR"               every protocol and port to CIDR
//	"CIDR tcp"           all TCP ports (likewise "udp")
//	"CIDR tcp/22"        one port
//	"CIDR tcp/8000-8100" an inclusive port range
//	"CIDR icmp"          ICMP for an IPv4 CIDR, ICMPv6 for an IPv6 one
//	                     ("icmpv6" / "icmp6" are accepted for IPv6)
//
// CIDR may be a bare address (/32 or /128) or "any" (0.0.0.0/0 and ::/0,
// hence two rules). Host bits are masked off. Protocol names are case
// insensitive.
func ParseAllow(s string) ([]Rule, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return nil, errors.New("empty rule")
	}
	if len(f) > 2 {
		return nil, fmt.Errorf("want \"CIDR [proto[/ports]]\", got %d words", len(f))
	}
	prefixes, err := parsePrefix(f[0], true)
	if err != nil {
		return nil, err
	}
	rules := make([]Rule, 0, len(prefixes))
	for _, p := range prefixes {
		r := Rule{Prefix: p, PortLo: 0, PortHi: 65535}
		if len(f) == 2 {
			if err := parseProto(strings.ToLower(f[1]), &r); err != nil {
				return nil, err
			}
		}
		rules = append(rules, r)
	}
	return rules, nil
}

func parseProto(s string, r *Rule) error {
	name, ports, hasPorts := strings.Cut(s, "/")
	switch name {
	case "tcp":
		r.Proto = packet.ProtoTCP
	case "udp":
		r.Proto = packet.ProtoUDP
	case "icmp", "icmpv6", "icmp6":
		if name != "icmp" && r.Prefix.Addr().Is4() {
			return fmt.Errorf("%s on IPv4 prefix %s (use icmp)", name, r.Prefix)
		}
		if hasPorts {
			return fmt.Errorf("%q: icmp takes no port", s)
		}
		r.Proto = packet.ProtoICMP
		if r.Prefix.Addr().Is6() {
			r.Proto = packet.ProtoICMPv6
		}
		return nil
	default:
		return fmt.Errorf("unknown protocol %q (want tcp, udp or icmp)", name)
	}
	if !hasPorts {
		return nil
	}
	los, his, isRange := strings.Cut(ports, "-")
	lo, err := parsePort(los)
	if err != nil {
		return err
	}
	hi := lo
	if isRange {
		if hi, err = parsePort(his); err != nil {
			return err
		}
		if hi < lo {
			return fmt.Errorf("port range %q: end below start", ports)
		}
	}
	r.PortLo, r.PortHi = lo, hi
	return nil
}

func parsePort(s string) (uint16, error) {
	if s == "" || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("bad port %q", s)
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("bad port %q (want 0-65535)", s)
	}
	return uint16(n), nil
}

// parsePrefix parses "CIDR", a bare address, or (when any is set) "any".
// The result is masked.
func parsePrefix(s string, any bool) ([]netip.Prefix, error) {
	if any && strings.EqualFold(s, "any") {
		return []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}, nil
	}
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return nil, fmt.Errorf("bad CIDR %q", s)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("bad address or CIDR %q", s)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() {
		return nil, fmt.Errorf("%q: IPv4-mapped IPv6 prefix; write the IPv4 form", s)
	}
	return []netip.Prefix{p.Masked()}, nil
}
