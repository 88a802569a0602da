package server

// The gateway's packet rules as pure decisions, in the style of a packet
// filter's RunIn/RunOut: each takes a parsed packet and what the rules need
// to know about one device (its addresses, its grant, the flows it opened,
// the flows other devices opened) and returns tunnel.Accept or the reason
// the packet is dropped. No session, socket or TUN is involved, so they are
// table-tested on synthetic packets (verdict_test.go), and every transport
// that carries a device's packets (the TLS stream today) calls the same two
// functions through tunnel.Inbound (device -> LAN) and tunnel.Round's keep
// (LAN -> device).
//
// The only state they touch is conntrack: a packet the policy allows
// records (or refreshes) its flow in the device's table, as a stateful
// filter does, so its replies are admitted on the way back.

import (
	"net/netip"
	"time"

	"github.com/sallyport/sallyport/server/conntrack"
	"github.com/sallyport/sallyport/server/policy"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// flowOwners answers whether the device holding a tunnel address opened a
// flow (the gateway: its address table; a test: a map).
type flowOwners interface {
	openedBy(addr netip.Addr, flow conntrack.Flow, now time.Time) bool
}

// rules is what the rules know about one device.
type rules struct {
	addr   netip.Addr       // its tunnel address (IPv4, or IPv6 on a v6-only gateway)
	addr6  netip.Addr       // its IPv6 tunnel address on a dual-stack gateway, else zero
	grant  *policy.Grant    // what its policies allow
	flows  *conntrack.Table // flows it opened
	others flowOwners       // flows other devices opened
}

// verdictIn decides a packet the device sent toward the network: the
// kernel's link-local chatter is dropped quietly (nd.go); the source must
// be one of the device's tunnel addresses (anti-spoofing); then either its
// grant allows the destination (the flow is recorded: a full table is a
// policy drop) or it answers a flow the destination device opened to it.
func verdictIn(info *packet.Info, p *rules, now time.Time) tunnel.DropReason {
	if isLinkLocalControl(info) {
		return tunnel.DropQuiet
	}
	if info.Src != p.addr && info.Src != p.addr6 { // info.Src is valid; a zero addr6 matches nothing
		return tunnel.DropSpoofed
	}
	flow := conntrack.FlowOf(info)
	if p.grant.Allows(info) {
		if !p.flows.Add(flow, now) { // Add refreshes a known flow
			return tunnel.DropPolicy // flow table full
		}
		return tunnel.Accept
	}
	if p.others.openedBy(info.Dst, flow.Reverse(), now) {
		return tunnel.Accept
	}
	return tunnel.DropPolicy
}

// verdictOut decides a packet from the network for the device: a reply to
// a flow the device opened (of ICMP only the echo reply to its request), an
// ICMP error quoting such a flow (path MTU; icmperr.go), or a flow another
// device opened to it under its own policy.
func verdictOut(pkt []byte, info *packet.Info, p *rules, now time.Time) tunnel.DropReason {
	flow := conntrack.FlowOf(info)
	var ok bool
	if isICMPError(info) { // for the flow it quotes, never as a reply of its own
		addr := p.addr
		if info.Version == 6 && p.addr6.IsValid() {
			addr = p.addr6
		}
		ok = admitICMPError(pkt, info, addr, p.flows, now)
	} else {
		ok = p.flows.Has(flow.Reverse(), now)
	}
	if ok || p.others.openedBy(info.Src, flow, now) {
		return tunnel.Accept
	}
	return tunnel.DropNoFlow
}

// rules is the session's view for the rules, with the grant in force now.
func (ss *session) rules() rules {
	return rules{addr: ss.addr, addr6: ss.addr6, grant: ss.grant.Load(), flows: ss.flows, others: ss.srv}
}

// fromDevice is the session's tunnel.Verdict (device -> network).
func (ss *session) fromDevice(pkt []byte, now time.Time) tunnel.DropReason {
	var info packet.Info // on the stack: TestDeviceToLANNoAllocs
	if packet.Parse(pkt, &info) != nil {
		return tunnel.DropMalformed
	}
	p := ss.rules()
	return verdictIn(&info, &p, now)
}

// admit decides a packet for the device (network -> device; the keep of
// its tunnel.Round) and counts what it refuses.
func (ss *session) admit(pkt []byte, info *packet.Info, now time.Time) bool {
	why := tunnel.DropMalformed
	if packet.Parse(pkt, info) == nil {
		p := ss.rules()
		why = verdictOut(pkt, info, &p, now)
	}
	ss.drops.Add(why, 1)
	return why == tunnel.Accept
}
