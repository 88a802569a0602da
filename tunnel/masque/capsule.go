package masque

// The capsule codec: RFC 9297 framing (type and length as QUIC varints,
// then the value) and the three CONNECT-IP capsules of RFC 9484 section 4.7.

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"

	"github.com/quic-go/quic-go/quicvarint"
)

// MaxCapsule bounds the value of one capsule this package reads: 64 KiB
// holds a sallyport frame of the largest config and thousands of
// addresses or routes. A longer capsule is a format error, found before
// its value is read.
const MaxCapsule = 64 << 10

// ReadCapsule reads one capsule from r into buf (grown as needed, up to
// MaxCapsule) and returns its type and value, which aliases buf. It
// returns io.EOF only at a clean end between capsules.
func ReadCapsule(r *bufio.Reader, buf []byte) (typ uint64, value []byte, err error) {
	typ, err = quicvarint.Read(r)
	if err != nil {
		return 0, nil, err // io.EOF between capsules
	}
	n, err := quicvarint.Read(r)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: capsule %#x: length: %w", ErrFormat, typ, unexpected(err))
	}
	if n > MaxCapsule {
		return 0, nil, fmt.Errorf("%w: capsule %#x of %d bytes (at most %d)", ErrFormat, typ, n, MaxCapsule)
	}
	if cap(buf) < int(n) {
		buf = make([]byte, n)
	}
	value = buf[:n]
	if _, err := io.ReadFull(r, value); err != nil {
		return 0, nil, fmt.Errorf("%w: capsule %#x: value: %w", ErrFormat, typ, unexpected(err))
	}
	return typ, value, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// AppendCapsule appends a capsule of type typ with value to dst.
func AppendCapsule(dst []byte, typ uint64, value []byte) []byte {
	dst = quicvarint.Append(dst, typ)
	dst = quicvarint.Append(dst, uint64(len(value)))
	return append(dst, value...)
}

// Address is one entry of ADDRESS_ASSIGN or ADDRESS_REQUEST: a request ID
// (0 for an unsolicited assignment) and a prefix.
type Address struct {
	RequestID uint64
	Prefix    netip.Prefix
}

// Route is one IP address range of ROUTE_ADVERTISEMENT: Start..End of one
// family, for IP protocol Proto (0 = all).
type Route struct {
	Start, End netip.Addr
	Proto      uint8
}

// AppendAddresses appends the value of an ADDRESS_ASSIGN or
// ADDRESS_REQUEST capsule.
func AppendAddresses(dst []byte, addrs []Address) []byte {
	for _, a := range addrs {
		dst = quicvarint.Append(dst, a.RequestID)
		dst = append(dst, version(a.Prefix.Addr()))
		dst = append(dst, a.Prefix.Addr().AsSlice()...)
		dst = append(dst, byte(a.Prefix.Bits()))
	}
	return dst
}

// ParseAddresses decodes the value of an ADDRESS_ASSIGN or ADDRESS_REQUEST
// capsule. Every prefix must be valid, of version 4 or 6, with no bits
// set past its length. request says it is an ADDRESS_REQUEST (request IDs
// must then be non-zero and the list non-empty).
func ParseAddresses(b []byte, request bool) ([]Address, error) {
	if request && len(b) == 0 {
		return nil, fmt.Errorf("%w: empty ADDRESS_REQUEST", ErrFormat)
	}
	var out []Address
	for len(b) > 0 {
		id, n, err := quicvarint.Parse(b)
		if err != nil {
			return nil, fmt.Errorf("%w: address request ID: %w", ErrFormat, err)
		}
		if request && id == 0 {
			return nil, fmt.Errorf("%w: ADDRESS_REQUEST with request ID 0", ErrFormat)
		}
		b = b[n:]
		a, rest, err := parseAddr(b)
		if err != nil {
			return nil, err
		}
		if len(rest) < 1 {
			return nil, fmt.Errorf("%w: address without prefix length", ErrFormat)
		}
		bits := int(rest[0])
		if bits > a.BitLen() {
			return nil, fmt.Errorf("%w: prefix length %d for an IPv%d address", ErrFormat, bits, version(a))
		}
		p := netip.PrefixFrom(a, bits)
		if p.Masked() != p {
			return nil, fmt.Errorf("%w: %s has bits set past its prefix length", ErrFormat, p)
		}
		out = append(out, Address{RequestID: id, Prefix: p})
		b = rest[1:]
	}
	return out, nil
}

// AppendRoutes appends the value of a ROUTE_ADVERTISEMENT capsule. The
// routes must be in the order RFC 9484 requires (Routes makes them so).
func AppendRoutes(dst []byte, routes []Route) []byte {
	for _, r := range routes {
		dst = append(dst, version(r.Start))
		dst = append(dst, r.Start.AsSlice()...)
		dst = append(dst, r.End.AsSlice()...)
		dst = append(dst, r.Proto)
	}
	return dst
}

// ParseRoutes decodes the value of a ROUTE_ADVERTISEMENT capsule and
// checks RFC 9484's rules: start <= end in one family; IPv4 ranges before
// IPv6 ones; within a family ascending by protocol; ranges of one family
// and protocol disjoint and ascending.
func ParseRoutes(b []byte) ([]Route, error) {
	var out []Route
	for len(b) > 0 {
		start, rest, err := parseAddr(b)
		if err != nil {
			return nil, err
		}
		w := start.BitLen() / 8
		if len(rest) < w+1 {
			return nil, fmt.Errorf("%w: truncated route", ErrFormat)
		}
		end, _ := netip.AddrFromSlice(rest[:w])
		r := Route{Start: start, End: end, Proto: rest[w]}
		if r.Start.Compare(r.End) > 0 {
			return nil, fmt.Errorf("%w: route %s-%s starts after it ends", ErrFormat, r.Start, r.End)
		}
		if len(out) > 0 && !before(out[len(out)-1], r) {
			return nil, fmt.Errorf("%w: routes out of order or overlapping at %s-%s", ErrFormat, r.Start, r.End)
		}
		out = append(out, r)
		b = rest[w+1:]
	}
	return out, nil
}

// before reports whether a may precede b in a ROUTE_ADVERTISEMENT.
func before(a, b Route) bool {
	switch {
	case a.Start.BitLen() != b.Start.BitLen():
		return a.Start.BitLen() < b.Start.BitLen()
	case a.Proto != b.Proto:
		return a.Proto < b.Proto
	}
	return a.End.Compare(b.Start) < 0
}

// parseAddr reads an IP version byte and an address of that version.
func parseAddr(b []byte) (netip.Addr, []byte, error) {
	if len(b) < 1 {
		return netip.Addr{}, nil, fmt.Errorf("%w: missing IP version", ErrFormat)
	}
	var w int
	switch b[0] {
	case 4:
		w = 4
	case 6:
		w = 16
	default:
		return netip.Addr{}, nil, fmt.Errorf("%w: IP version %d", ErrFormat, b[0])
	}
	if len(b) < 1+w {
		return netip.Addr{}, nil, fmt.Errorf("%w: truncated IPv%d address", ErrFormat, b[0])
	}
	a, _ := netip.AddrFromSlice(b[1 : 1+w])
	return a, b[1+w:], nil
}

func version(a netip.Addr) byte {
	if a.Is4() {
		return 4
	}
	return 6
}

// Routes turns prefixes (the routes a policy pushes) into the ranges of a
// ROUTE_ADVERTISEMENT for all protocols: merged where they overlap or
// touch, IPv4 first, ascending. Invalid prefixes are skipped.
func Routes(prefixes []netip.Prefix) []Route {
	var rs []Route
	for _, p := range prefixes {
		if !p.IsValid() {
			continue
		}
		p = p.Masked()
		a := p.Addr().Unmap()
		p = netip.PrefixFrom(a, p.Bits()-(p.Addr().BitLen()-a.BitLen()))
		rs = append(rs, Route{Start: p.Addr(), End: last(p)})
	}
	slices.SortFunc(rs, func(x, y Route) int {
		if c := cmp.Compare(x.Start.BitLen(), y.Start.BitLen()); c != 0 {
			return c
		}
		return x.Start.Compare(y.Start)
	})
	out := rs[:0]
	for _, r := range rs {
		if n := len(out); n > 0 && out[n-1].Start.BitLen() == r.Start.BitLen() {
			prev := &out[n-1]
			next := prev.End.Next()
			if r.Start.Compare(prev.End) <= 0 || (next.IsValid() && r.Start == next) {
				if r.End.Compare(prev.End) > 0 {
					prev.End = r.End
				}
				continue
			}
		}
		out = append(out, r)
	}
	return out
}

// last is the highest address of p.
func last(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Covers reports whether the routes cover address a for protocol proto.
func Covers(routes []Route, a netip.Addr, proto uint8) bool {
	for _, r := range routes {
		if r.Start.BitLen() == a.BitLen() && (r.Proto == 0 || r.Proto == proto) &&
			r.Start.Compare(a) <= 0 && a.Compare(r.End) <= 0 {
			return true
		}
	}
	return false
}
