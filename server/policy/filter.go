package policy

import (
	"cmp"
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/sallyport/sallyport/tunnel/packet"
)

// The compiled filter. Rules are split by address family and protocol class
// (any protocol, TCP, UDP, ICMP), then grouped by prefix; each group's port
// ranges are sorted and merged. A small table is scanned linearly; a large
// one becomes one hash map per distinct prefix length, so a lookup costs one
// mask and one map probe per length present instead of one compare per rule.

const (
	classAny = iota
	classTCP
	classUDP
	classICMP
	numClasses
)

// linearMax is the largest number of prefix groups scanned linearly.
var linearMax = 16

type u128 struct{ hi, lo uint64 }

func keyOf(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// mask keeps the top bits of k (bits in 0..128).
func (k u128) mask(bits int) u128 {
	switch {
	case bits <= 0:
		return u128{}
	case bits < 64:
		return u128{k.hi &^ (^uint64(0) >> bits), 0}
	case bits < 128:
		return u128{k.hi, k.lo &^ (^uint64(0) >> (bits - 64))}
	}
	return k
}

type portRange struct{ lo, hi uint16 }

type group struct {
	key   u128
	bits  int // in the 128-bit space (IPv4 bits + 96)
	ports []portRange
}

type level struct {
	bits int
	m    map[u128][]portRange
}

type table struct {
	linear []group
	levels []level
}

// filter is indexed by family (0 = IPv4, 1 = IPv6) and class.
type filter [2][numClasses]table

func classOf(fam int, proto uint8) int {
	switch proto {
	case packet.ProtoTCP:
		return classTCP
	case packet.ProtoUDP:
		return classUDP
	case packet.ProtoICMP:
		if fam == 0 {
			return classICMP
		}
	case packet.ProtoICMPv6:
		if fam == 1 {
			return classICMP
		}
	}
	return -1
}

func buildFilter(rules []Rule) filter {
	type gk struct {
		fam, class int
		p          netip.Prefix
	}
	groups := map[gk][]portRange{}
	for _, r := range rules {
		fam := 0
		if r.Prefix.Addr().Is6() {
			fam = 1
		}
		class := classAny
		if r.Proto != 0 {
			class = classOf(fam, r.Proto)
			if class < 0 {
				continue // icmp proto on the wrong family: cannot happen via ParseAllow
			}
		}
		pr := portRange{r.PortLo, r.PortHi}
		if class == classAny || class == classICMP {
			pr = portRange{0, 65535}
		}
		k := gk{fam, class, r.Prefix.Masked()}
		groups[k] = append(groups[k], pr)
	}
	var f filter
	var byTable [2][numClasses][]group
	for k, pr := range groups {
		bits := k.p.Bits()
		if k.fam == 0 {
			bits += 96
		}
		byTable[k.fam][k.class] = append(byTable[k.fam][k.class], group{keyOf(k.p.Addr()), bits, mergeRanges(pr)})
	}
	for fam := range byTable {
		for class, gs := range byTable[fam] {
			// Shorter prefixes first: they cover most addresses.
			slices.SortFunc(gs, func(a, b group) int {
				return cmp.Or(cmp.Compare(a.bits, b.bits), cmp.Compare(a.key.hi, b.key.hi), cmp.Compare(a.key.lo, b.key.lo))
			})
			t := &f[fam][class]
			if len(gs) <= linearMax {
				t.linear = gs
				continue
			}
			for _, g := range gs {
				if n := len(t.levels); n == 0 || t.levels[n-1].bits != g.bits {
					t.levels = append(t.levels, level{bits: g.bits, m: map[u128][]portRange{}})
				}
				t.levels[len(t.levels)-1].m[g.key] = g.ports
			}
		}
	}
	return f
}

func mergeRanges(rs []portRange) []portRange {
	slices.SortFunc(rs, func(a, b portRange) int { return cmp.Or(cmp.Compare(a.lo, b.lo), cmp.Compare(a.hi, b.hi)) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if int(r.lo) <= int(last.hi)+1 {
			last.hi = max(last.hi, r.hi)
			continue
		}
		out = append(out, r)
	}
	return slices.Clip(out)
}

// portMode says which port ranges of a group match.
type portMode uint8

const (
	onePort  portMode = iota // a range holding the port
	allPorts                 // a range of every port (a non-first fragment has no port)
	anyPort                  // any range at all (some traffic to the address)
)

func portsMatch(rs []portRange, port uint16, mode portMode) bool {
	for _, r := range rs {
		switch mode {
		case onePort:
			if r.lo <= port && port <= r.hi {
				return true
			}
		case allPorts:
			if r.lo == 0 && r.hi == 65535 {
				return true
			}
		case anyPort:
			return true
		}
	}
	return false
}

func (t *table) allows(k u128, port uint16, mode portMode) bool {
	for i := range t.linear {
		g := &t.linear[i]
		if k.mask(g.bits) == g.key && portsMatch(g.ports, port, mode) {
			return true
		}
	}
	for i := range t.levels {
		l := &t.levels[i]
		if rs, ok := l.m[k.mask(l.bits)]; ok && portsMatch(rs, port, mode) {
			return true
		}
	}
	return false
}

func (f *filter) allows(p *packet.Info) bool {
	if !p.Dst.IsValid() {
		return false
	}
	fam := 1
	if p.Dst.Is4() {
		fam = 0
	}
	k := keyOf(p.Dst)
	if f[fam][classAny].allows(k, 0, onePort) {
		return true
	}
	class := classOf(fam, p.Proto)
	if class < 0 {
		return false
	}
	mode := onePort
	if p.FragOffset != 0 {
		mode = allPorts
	}
	return f[fam][class].allows(k, p.DstPort, mode)
}

// allowsSome reports whether some packet to a passes: a rule of any
// protocol and any port whose prefix holds it.
func (f *filter) allowsSome(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	fam := 1
	if a.Is4() {
		fam = 0
	}
	k := keyOf(a)
	for class := range f[fam] {
		if f[fam][class].allows(k, 0, anyPort) {
			return true
		}
	}
	return false
}
