package client

import (
	"net/netip"

	"github.com/sallyport/sallyport/tunnel"
)

// pushedV6 is the IPv6 tunnel address a dual-stack gateway pushed beside
// the IPv4 one, if any.
func pushedV6(pc tunnel.Config) []netip.Prefix {
	_ = pc
	return nil
}
