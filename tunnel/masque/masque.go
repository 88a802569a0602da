// Package masque is the wire format of sallyport's datagram path: CONNECT-IP
// (RFC 9484) over HTTP/3 (RFC 9114, 9297, 9220), shared by the gateway and
// the laptop.
//
// A session on the datagram path is one QUIC connection (TLS 1.3 with the
// device certificate, ALPN "h3", no 0-RTT) carrying one extended CONNECT
// request with :protocol "connect-ip" on Path. The request stream carries
// capsules (RFC 9297): ADDRESS_ASSIGN and ROUTE_ADVERTISEMENT from the
// gateway (any CONNECT-IP client understands them), ADDRESS_REQUEST from a
// client that asks, and CapsuleSallyport carrying one sallyport control
// frame (config, push, close; tunnel/frame.go) so sallyport's own config
// (DNS, kill switch, policy routes, MTU) travels exactly as on the TLS
// stream; other clients skip it as RFC 9297 requires. IP packets travel as
// HTTP datagrams: a context ID of 0 and one whole IP packet.
//
// This package holds the format only: constants, the capsule codec and the
// datagram prefix. Every decoder bounds what it reads before it allocates
// and has a fuzz target.
package masque

import (
	"errors"

	"github.com/quic-go/quic-go/quicvarint"
)

// Path is the request path of the CONNECT-IP request: RFC 9484's default
// URI template with both variables set to the wildcard (any target, any
// protocol), the form a client without flow forwarding uses.
const Path = "/.well-known/masque/ip/*/*/"

// Protocol is the :protocol of the extended CONNECT request (RFC 9484).
const Protocol = "connect-ip"

// ALPN is the TLS application protocol of HTTP/3.
const ALPN = "h3"

// HelloHeader carries a sallyport laptop's hello (tunnel.Hello, JSON) on
// the CONNECT-IP request. A request without it is a plain CONNECT-IP client:
// it gets addresses and routes in capsules and no sallyport capabilities.
const HelloHeader = "Sallyport-Hello"

// ReasonHeader carries the reason code (tunnel.Reason) on a refused
// CONNECT-IP request of an authenticated device (403, 503), as a Close
// frame carries it on the TLS stream.
const ReasonHeader = "Sallyport-Reason"

// Capsule types (RFC 9484 section 4.7 and sallyport's own).
const (
	CapsuleAddressAssign      uint64 = 0x01
	CapsuleAddressRequest     uint64 = 0x02
	CapsuleRouteAdvertisement uint64 = 0x03
	// CapsuleSallyport carries one sallyport control frame (header and
	// payload as on the TLS stream). A provisional value outside the
	// ranges RFC 9297 reserves for standards; other clients skip it.
	CapsuleSallyport uint64 = 0x53504c59 // "SPLY"
)

// ContextIDLen is the length of the context ID (0, one varint byte) in
// front of every IP packet in an HTTP datagram.
const ContextIDLen = 1

// ErrFormat is wrapped by every error about bytes the peer sent that break
// the format.
var ErrFormat = errors.New("connect-ip format error")

// Packet returns the IP packet of an HTTP datagram's payload (after the
// quarter stream ID): ok is false for a context ID other than 0 (RFC 9484:
// unknown contexts are dropped), a malformed varint, or an empty packet.
func Packet(d []byte) (pkt []byte, ok bool) {
	if len(d) > 0 && d[0] == 0 { // the one-byte varint 0, the common case
		return d[1:], len(d) > 1
	}
	id, n, err := quicvarint.Parse(d)
	if err != nil || id != 0 || n >= len(d) {
		return nil, false
	}
	return d[n:], true
}
