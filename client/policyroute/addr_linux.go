package policyroute

import (
	"net"
	"net/netip"
)

// ipNet and prefixOf convert between netip and the net types netlink uses.
// tunnel/netlink_linux.go has the same two, on purpose: the only package
// both could share is one tunnel may import, and tunnel imports nothing of
// ours (ARCHITECTURE.md); exporting them from tunnel would tie the
// laptop's routing back to the data plane it was moved out of, for twenty
// lines.
func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{
		IP:   net.IP(p.Addr().AsSlice()),
		Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen()),
	}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits == 0 {
		return netip.Prefix{}, false
	}
	if bits == 32 {
		a = a.Unmap()
	}
	return netip.PrefixFrom(a, ones), true
}
