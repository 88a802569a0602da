// Package packet parses the IPv4 and IPv6 headers of raw IP packets read from
// a TUN device or a tunnel frame, far enough to filter them: addresses,
// transport protocol, TCP/UDP ports and ICMP type / echo identifier.
//
// Parse never allocates and never panics on malformed input; it returns one
// of the package's sentinel errors (match them with errors.Is).
package packet

import (
	"encoding/binary"
	"net/netip"
)

// IP protocol numbers used by the filter.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// IPv6 extension header numbers that Parse skips.
const (
	protoHopByHop = 0
	protoRouting  = 43
	protoFragment = 44
	protoAH       = 51
	protoDestOpts = 60
)

// maxExtHeaders bounds the IPv6 extension header chain Parse will walk.
const maxExtHeaders = 8

// ICMP echo types whose identifier is reported as SrcPort and DstPort.
const (
	icmpEchoReply     = 0
	icmpEchoRequest   = 8
	icmpv6EchoRequest = 128
	icmpv6EchoReply   = 129
)

// Info is the parsed summary of one IP packet.
type Info struct {
	Version uint8 // 4 or 6
	// Proto is the transport protocol: the IPv4 protocol field, or for IPv6
	// the first header after the extension headers (for a non-first
	// fragment, the next header its fragment header names: the headers
	// after it are not in this fragment).
	Proto    uint8
	Src, Dst netip.Addr
	// SrcPort and DstPort are the TCP/UDP ports. For ICMP/ICMPv6 echo request
	// and reply both hold the echo identifier, so a reply's flow is the
	// reverse of its request's. Zero when unknown (other protocols, other
	// ICMP types, non-first fragments).
	SrcPort, DstPort uint16
	// ICMPType is the ICMP or ICMPv6 message type (0 for other protocols).
	ICMPType uint8
	// Fragment is true for any fragment of a fragmented packet, the first
	// one included (IPv4 MF flag or offset, or an IPv6 fragment header).
	Fragment bool
	// FragOffset is the fragment offset in bytes. Non-zero means this is a
	// non-first fragment: it carries no transport header, so ports and
	// ICMPType are zero.
	FragOffset uint16
}

// NonFirstFragment reports whether the packet is a fragment other than the
// first, i.e. one without a transport header.
func (i *Info) NonFirstFragment() bool { return i.FragOffset != 0 }

// Error is a parse error. Every error Parse returns is one of the *Error
// values below, which unwrap to the sentinel category (ErrTruncated, ...).
type Error struct {
	msg  string
	kind error
}

func (e *Error) Error() string { return "packet: " + e.msg }

// Unwrap returns the error category.
func (e *Error) Unwrap() error { return e.kind }

type kind string

func (k kind) Error() string { return string(k) }

// Error categories, for errors.Is.
var (
	ErrTruncated  error = kind("truncated packet")
	ErrVersion    error = kind("bad IP version")
	ErrHeaderLen  error = kind("bad header length")
	ErrTotalLen   error = kind("bad total length")
	ErrExtHeaders error = kind("too many IPv6 extension headers")
)

var (
	errEmpty      = &Error{"empty packet", ErrTruncated}
	errVersion    = &Error{"IP version is neither 4 nor 6", ErrVersion}
	errShort4     = &Error{"truncated IPv4 header (< 20 bytes)", ErrTruncated}
	errIHL        = &Error{"IPv4 header length (IHL) below 5 words", ErrHeaderLen}
	errTotalShort = &Error{"IPv4 total length smaller than its header", ErrTotalLen}
	errTotalLong  = &Error{"IPv4 total length beyond end of buffer", ErrTotalLen}
	errShort6     = &Error{"truncated IPv6 header (< 40 bytes)", ErrTruncated}
	errPayload6   = &Error{"IPv6 payload length beyond end of buffer", ErrTotalLen}
	errExt6       = &Error{"truncated IPv6 extension header", ErrTruncated}
	errExtMany    = &Error{"more than 8 IPv6 extension headers", ErrExtHeaders}
	errTCP        = &Error{"truncated TCP header", ErrTruncated}
	errUDP        = &Error{"truncated UDP header", ErrTruncated}
	errICMP       = &Error{"truncated ICMP header", ErrTruncated}
)

// Parse parses the IP packet in b into info, overwriting every field.
// b may be longer than the packet (trailing bytes are ignored), never
// shorter. TCP, UDP and ICMP headers must be complete in packets that carry
// them (tiny first fragments are rejected). Parse does not allocate.
func Parse(b []byte, info *Info) error {
	*info = Info{}
	if len(b) == 0 {
		return errEmpty
	}
	switch b[0] >> 4 {
	case 4:
		return parse4(b, info)
	case 6:
		return parse6(b, info)
	}
	return errVersion
}

func parse4(b []byte, info *Info) error {
	if len(b) < 20 {
		return errShort4
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 {
		return errIHL
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total < ihl {
		return errTotalShort
	}
	if total > len(b) {
		return errTotalLong
	}
	info.Version = 4
	info.Proto = b[9]
	info.Src = netip.AddrFrom4([4]byte(b[12:16]))
	info.Dst = netip.AddrFrom4([4]byte(b[16:20]))
	frag := binary.BigEndian.Uint16(b[6:8])
	off := frag & 0x1fff
	info.Fragment = off != 0 || frag&0x2000 != 0
	info.FragOffset = off * 8
	if off != 0 {
		return nil
	}
	return parseL4(b[ihl:total], info, ProtoICMP)
}

func parse6(b []byte, info *Info) error {
	if len(b) < 40 {
		return errShort6
	}
	end := 40 + int(binary.BigEndian.Uint16(b[4:6]))
	if end > len(b) {
		return errPayload6
	}
	info.Version = 6
	info.Src = netip.AddrFrom16([16]byte(b[8:24]))
	info.Dst = netip.AddrFrom16([16]byte(b[24:40]))
	next := b[6]
	off := 40
	for i := 0; ; i++ {
		var hlen int
		switch next {
		case protoHopByHop, protoRouting, protoDestOpts:
			if end-off < 8 {
				return errExt6
			}
			hlen = (int(b[off+1]) + 1) * 8
		case protoAH:
			if end-off < 8 {
				return errExt6
			}
			hlen = (int(b[off+1]) + 2) * 4
		case protoFragment:
			if end-off < 8 {
				return errExt6
			}
			hlen = 8
			fo := binary.BigEndian.Uint16(b[off+2 : off+4])
			info.Fragment = true
			info.FragOffset = fo &^ 7 // offset field is in 8-byte units, top 13 bits
		default:
			info.Proto = next
			return parseL4(b[off:end], info, ProtoICMPv6)
		}
		if i >= maxExtHeaders {
			return errExtMany
		}
		if end-off < hlen {
			return errExt6
		}
		next = b[off]
		if info.FragOffset != 0 {
			// A non-first fragment: what follows its header is data from
			// the middle of the packet, never headers (the kernel's
			// ipv6_skip_exthdr stops here too). Walking it would let data
			// that looks like a second fragment header make this a first
			// fragment with ports.
			info.Proto = next
			return nil
		}
		off += hlen
	}
}

// parseL4 fills ports / ICMP fields from the transport header in l4.
func parseL4(l4 []byte, info *Info, icmp uint8) error {
	switch info.Proto {
	case ProtoTCP:
		if len(l4) < 20 {
			return errTCP
		}
	case ProtoUDP:
		if len(l4) < 8 {
			return errUDP
		}
	case icmp:
		if len(l4) < 8 {
			return errICMP
		}
		t := l4[0]
		info.ICMPType = t
		if (icmp == ProtoICMP && (t == icmpEchoRequest || t == icmpEchoReply)) ||
			(icmp == ProtoICMPv6 && (t == icmpv6EchoRequest || t == icmpv6EchoReply)) {
			id := binary.BigEndian.Uint16(l4[4:6])
			info.SrcPort, info.DstPort = id, id
		}
		return nil
	default:
		return nil
	}
	info.SrcPort = binary.BigEndian.Uint16(l4[0:2])
	info.DstPort = binary.BigEndian.Uint16(l4[2:4])
	return nil
}

// Src returns the source address of the IP packet in b, checking only the
// version and that the fixed header is present.
func Src(b []byte) (netip.Addr, bool) {
	if len(b) >= 20 && b[0]>>4 == 4 {
		return netip.AddrFrom4([4]byte(b[12:16])), true
	}
	if len(b) >= 40 && b[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(b[8:24])), true
	}
	return netip.Addr{}, false
}

// Dst returns the destination address of the IP packet in b, checking only
// the version and that the fixed header is present.
func Dst(b []byte) (netip.Addr, bool) {
	if len(b) >= 20 && b[0]>>4 == 4 {
		return netip.AddrFrom4([4]byte(b[16:20])), true
	}
	if len(b) >= 40 && b[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(b[24:40])), true
	}
	return netip.Addr{}, false
}
