package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// LinkUp sets the MTU of link name (when mtu > 0) and brings it up.
func LinkUp(name string, mtu int) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("link up %s: %w", name, err)
	}
	if mtu > 0 && link.Attrs().MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("link %s: set MTU %d: %w", name, mtu, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("link up %s: %w", name, err)
	}
	return nil
}

// SetAddress makes p the only address of its family on link name (IPv6
// link-local addresses are kept). It is idempotent, and the link keeps p and
// its routes through an address change, also when p is in the old
// address's subnet.
func SetAddress(name string, p netip.Prefix) error {
	if !p.IsValid() {
		return fmt.Errorf("set address on %s: invalid prefix %q", name, p)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("set address %s on %s: %w", p, name, err)
	}
	family := netlink.FAMILY_V4
	if p.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(link, family)
	if err != nil {
		return fmt.Errorf("list addresses of %s: %w", name, err)
	}
	// Add first, then remove the others: removing a link's last IPv4
	// address makes the kernel flush every IPv4 route via the link. A new
	// IPv4 address in the same subnet as the old one is added as its
	// secondary, and with promote_secondaries=0 (the kernel default)
	// deleting the primary deletes its secondaries too; so promotion is
	// switched on for the link first. IPv6 has no primaries.
	if family == netlink.FAMILY_V4 {
		if err := promoteSecondaries(link); err != nil {
			return fmt.Errorf("set address %s on %s: %w", p, name, err)
		}
	}
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: ipNet(p)}); err != nil {
		return fmt.Errorf("add address %s to %s: %w", p, name, err)
	}
	for _, a := range addrs {
		ap, ok := prefixOf(a.IPNet)
		if !ok || ap == p || ap.Addr().IsLinkLocalUnicast() {
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove address %s from %s: %w", ap, name, err)
		}
	}
	return nil
}

// ipv4DevconfPromoteSecondaries is IPV4_DEVCONF_PROMOTE_SECONDARIES from
// linux/ip.h (not in x/sys/unix).
const ipv4DevconfPromoteSecondaries = 20

// promoteSecondaries sets net.ipv4.conf.<link>.promote_secondaries=1 through
// netlink (RTM_SETLINK, IFLA_AF_SPEC/AF_INET/IFLA_INET_CONF), so deleting
// the primary IPv4 address of a subnet promotes a secondary instead of
// deleting it. Netlink, unlike /proc/sys, works under systemd's
// ProtectKernelTunables and needs only CAP_NET_ADMIN.
func promoteSecondaries(link netlink.Link) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(link.Attrs().Index)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	conf := spec.AddRtAttr(unix.AF_INET, nil).AddRtAttr(unix.IFLA_INET_CONF, nil)
	conf.AddRtAttr(ipv4DevconfPromoteSecondaries, nl.Uint32Attr(1))
	req.AddData(spec)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return fmt.Errorf("enable promote_secondaries on %s: %w", link.Attrs().Name, err)
	}
	return nil
}

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
