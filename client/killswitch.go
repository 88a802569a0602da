package client

// The kill switch: nftables rules in the client's own table (inet
// sallyport-<dev>) that drop every packet leaving the laptop except through
// the TUN, the client's marked connection to the gateway, loopback, and
// DHCP/router and neighbour discovery on the physical link (plus the local
// LAN with allow_lan). The table is independent of the client process: it
// stays while the client reconnects and after it crashes (kill -9), and a
// new `sallyport up` adopts it; only a clean exit or `sallyport down`
// removes it. killswitch_linux.go talks to the kernel.

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
)

// killSpec is everything the kill switch's rules depend on.
type killSpec struct {
	Table string // nftables table name (family inet)
	Dev   string // the TUN: anything leaving through it is allowed
	Mark  uint32 // the fwmark of the client's own sockets
	// Gateways are the configured gateway endpoints: a marked TCP packet to
	// one of them is allowed. A zero Addr (a gateway given by name) allows
	// the port to any address, and then marked DNS queries (to resolve it).
	Gateways []gatewayEndpoint
	DNS      bool
	// LAN is the local networks allowed with allow_lan (empty otherwise).
	LAN []netip.Prefix
}

// gatewayEndpoint is one gateway's address and port.
type gatewayEndpoint struct {
	Addr netip.Addr
	Port uint16
}

// killTableName is the nftables table of the client using TUN dev.
func killTableName(dev string) string { return "sallyport-" + dev }

// newKillSpec builds the spec for TUN dev, fwmark mark and the configured
// gateways ("host:port"); lan is the local networks to allow (allow_lan).
func newKillSpec(dev string, mark uint32, servers []string, lan []netip.Prefix) killSpec {
	s := killSpec{Table: killTableName(dev), Dev: dev, Mark: mark, LAN: slices.Clone(lan)}
	for _, srv := range servers {
		host, port, err := net.SplitHostPort(srv)
		if err != nil {
			continue
		}
		pn, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			continue
		}
		ep := gatewayEndpoint{Port: uint16(pn)}
		if a, err := netip.ParseAddr(host); err == nil {
			ep.Addr = a.Unmap()
		} else {
			s.DNS = true
		}
		if !slices.Contains(s.Gateways, ep) {
			s.Gateways = append(s.Gateways, ep)
		}
	}
	return s
}

// wantKillSwitch decides whether the kill switch is on: either side can
// switch it on (the client file's [tunnel] kill_switch, or the gateway's
// pushed kill_switch); when neither says anything, it is on for a full
// tunnel. An explicit false on one side with nothing on the other turns it
// off.
func wantKillSwitch(local, pushed *bool, full bool) bool {
	if (local != nil && *local) || (pushed != nil && *pushed) {
		return true
	}
	if local == nil && pushed == nil {
		return full
	}
	return false
}
