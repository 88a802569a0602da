package server

// IPv6 link-local chatter on the device -> LAN path (verdictIn). A
// laptop's kernel sends router and neighbour solicitations and MLD reports
// on every interface with IPv6, the tunnel included. They are meant for the
// link, and a TUN link has no neighbours: the gateway drops them before the
// anti-spoofing check, without counting them as spoofed or against the
// policy, and never forwards them.

import "github.com/sallyport/sallyport/tunnel/packet"

// ICMPv6 types of link-local control traffic (RFC 4861 neighbour discovery,
// RFC 2710/3810 multicast listener discovery).
const (
	icmpv6MLDQuery        = 130
	icmpv6MLDReport       = 131
	icmpv6MLDDone         = 132
	icmpv6RouterSolicit   = 133
	icmpv6RouterAdvert    = 134
	icmpv6NeighborSolicit = 135
	icmpv6NeighborAdvert  = 136
	icmpv6Redirect        = 137
	icmpv6MLDv2Report     = 143
)

// isLinkLocalControl reports whether info is neighbour discovery, a
// router solicitation/advertisement, a redirect or MLD.
func isLinkLocalControl(info *packet.Info) bool {
	if info.Version != 6 || info.Proto != packet.ProtoICMPv6 {
		return false
	}
	switch info.ICMPType {
	case icmpv6MLDQuery, icmpv6MLDReport, icmpv6MLDDone, icmpv6MLDv2Report,
		icmpv6RouterSolicit, icmpv6RouterAdvert, icmpv6NeighborSolicit, icmpv6NeighborAdvert, icmpv6Redirect:
		return true
	}
	return false
}
