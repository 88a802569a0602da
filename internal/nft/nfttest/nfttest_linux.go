package nfttest

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Recorder is an nft.Conn that records operations instead of sending them.
// Tables is what ListTablesOfFamily answers; FlushErr what Flush returns.
type Recorder struct {
	Ops      []string // "add table inet X", "add chain ...", "add rule ...", "flush"
	Tables   []string
	FlushErr error
	ListErr  error
}

func (r *Recorder) AddTable(t *nftables.Table) *nftables.Table {
	r.Ops = append(r.Ops, "add table "+family(t.Family)+" "+t.Name)
	return t
}

func (r *Recorder) DelTable(t *nftables.Table) {
	r.Ops = append(r.Ops, "delete table "+family(t.Family)+" "+t.Name)
}

func (r *Recorder) AddChain(c *nftables.Chain) *nftables.Chain {
	policy := "none"
	if c.Policy != nil {
		policy = map[nftables.ChainPolicy]string{nftables.ChainPolicyAccept: "accept", nftables.ChainPolicyDrop: "drop"}[*c.Policy]
	}
	var hook, prio string
	if c.Hooknum != nil {
		hook = map[nftables.ChainHook]string{*nftables.ChainHookOutput: "output", *nftables.ChainHookPostrouting: "postrouting",
			*nftables.ChainHookInput: "input", *nftables.ChainHookForward: "forward", *nftables.ChainHookPrerouting: "prerouting"}[*c.Hooknum]
	}
	if c.Priority != nil {
		prio = fmt.Sprint(int32(*c.Priority))
	}
	r.Ops = append(r.Ops, fmt.Sprintf("add chain %s %s %s { type %s hook %s priority %s; policy %s; }",
		family(c.Table.Family), c.Table.Name, c.Name, c.Type, hook, prio, policy))
	return c
}

func (r *Recorder) AddRule(rule *nftables.Rule) *nftables.Rule {
	r.Ops = append(r.Ops, fmt.Sprintf("add rule %s %s %s %s", family(rule.Table.Family), rule.Table.Name, rule.Chain.Name, Render(rule.Exprs)))
	return rule
}

func (r *Recorder) Flush() error {
	r.Ops = append(r.Ops, "flush")
	return r.FlushErr
}

func (r *Recorder) ListTablesOfFamily(f nftables.TableFamily) ([]*nftables.Table, error) {
	if r.ListErr != nil {
		return nil, r.ListErr
	}
	var ts []*nftables.Table
	for _, n := range r.Tables {
		ts = append(ts, &nftables.Table{Name: n, Family: f})
	}
	return ts, nil
}

// Rules returns the rules recorded, rendered (the part after the chain).
func (r *Recorder) Rules() []string {
	var out []string
	for _, op := range r.Ops {
		if rest, ok := strings.CutPrefix(op, "add rule "); ok {
			f := strings.SplitN(rest, " ", 4)
			out = append(out, f[3])
		}
	}
	return out
}

func family(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	}
	return fmt.Sprint(f)
}

// Render prints a rule's expressions in nft's words: a load (meta key,
// payload at an offset, masked) followed by its comparison reads as one
// match ("ip saddr 10.8.0.0/24", "oifname \"eth0\"", "th dport 53"). A
// payload at an offset that is no known field prints as @nh,OFF,LEN, so a
// rule matching the wrong field reads wrong.
func Render(es []expr.Any) string {
	var parts []string
	var load string // what register 1 holds
	var mask []byte // its mask, if a Bitwise applied one
	var v6 bool     // the rule matched nfproto ipv6 before
	for _, e := range es {
		switch e := e.(type) {
		case *expr.Meta:
			load, mask = metaName(e.Key), nil
		case *expr.Payload:
			load, mask = payloadName(e, v6), nil
		case *expr.Bitwise:
			mask = e.Mask
		case *expr.Cmp:
			op := map[expr.CmpOp]string{expr.CmpOpEq: "", expr.CmpOpNeq: "!= "}[e.Op]
			val := value(load, e.Data, mask)
			if load == "meta nfproto" {
				v6 = val == "ipv6"
			}
			parts = append(parts, load+" "+op+val)
		case *expr.Masq:
			parts = append(parts, "masquerade")
		case *expr.Verdict:
			parts = append(parts, map[expr.VerdictKind]string{expr.VerdictAccept: "accept", expr.VerdictDrop: "drop"}[e.Kind])
		default:
			parts = append(parts, fmt.Sprintf("%T%+v", e, e))
		}
	}
	return strings.Join(parts, " ")
}

func metaName(k expr.MetaKey) string {
	switch k {
	case expr.MetaKeyNFPROTO:
		return "meta nfproto"
	case expr.MetaKeyL4PROTO:
		return "meta l4proto"
	case expr.MetaKeyOIFNAME:
		return "oifname"
	case expr.MetaKeyMARK:
		return "meta mark"
	}
	return fmt.Sprintf("meta key%d", k)
}

func payloadName(p *expr.Payload, v6 bool) string {
	switch {
	case p.Base == expr.PayloadBaseNetworkHeader && !v6 && p.Len == 4 && p.Offset == 12:
		return "ip saddr"
	case p.Base == expr.PayloadBaseNetworkHeader && !v6 && p.Len == 4 && p.Offset == 16:
		return "ip daddr"
	case p.Base == expr.PayloadBaseNetworkHeader && v6 && p.Len == 16 && p.Offset == 8:
		return "ip6 saddr"
	case p.Base == expr.PayloadBaseNetworkHeader && v6 && p.Len == 16 && p.Offset == 24:
		return "ip6 daddr"
	case p.Base == expr.PayloadBaseTransportHeader && p.Len == 2 && p.Offset == 0:
		return "th sport"
	case p.Base == expr.PayloadBaseTransportHeader && p.Len == 2 && p.Offset == 2:
		return "th dport"
	case p.Base == expr.PayloadBaseTransportHeader && p.Len == 1 && p.Offset == 0:
		return "icmpv6 type"
	}
	base := map[expr.PayloadBase]string{expr.PayloadBaseNetworkHeader: "nh", expr.PayloadBaseTransportHeader: "th", expr.PayloadBaseLLHeader: "ll"}[p.Base]
	return fmt.Sprintf("@%s,%d,%d", base, p.Offset*8, p.Len*8)
}

func value(load string, data, mask []byte) string {
	switch load {
	case "meta nfproto":
		switch data[0] {
		case unix.NFPROTO_IPV4:
			return "ipv4"
		case unix.NFPROTO_IPV6:
			return "ipv6"
		}
	case "meta l4proto":
		switch data[0] {
		case unix.IPPROTO_TCP:
			return "tcp"
		case unix.IPPROTO_UDP:
			return "udp"
		case unix.IPPROTO_ICMPV6:
			return "ipv6-icmp"
		}
	case "oifname":
		return fmt.Sprintf("%q", strings.TrimRight(string(data), "\x00"))
	case "meta mark":
		return fmt.Sprintf("0x%08x", binary.NativeEndian.Uint32(data))
	case "th sport", "th dport":
		return fmt.Sprint(binary.BigEndian.Uint16(data))
	case "icmpv6 type":
		return fmt.Sprint(data[0])
	case "ip saddr", "ip daddr", "ip6 saddr", "ip6 daddr":
		a, _ := netip.AddrFromSlice(data)
		bits := a.BitLen()
		if mask != nil {
			bits = 0
			for _, b := range mask {
				for ; b&0x80 != 0; b <<= 1 {
					bits++
				}
			}
		}
		return netip.PrefixFrom(a, bits).String()
	}
	return fmt.Sprintf("%x", data)
}
