package client

import (
	"net/netip"

	"github.com/sallyport/sallyport/tunnel"
)

// system is everything the client changes on the laptop: the TUN device,
// its address, MTU and routes, and DNS. osSystem is the real one (netlink
// and systemd-resolved, which need root); unit tests substitute a recorder
// so Run, session and the relay run without root.
type system interface {
	OpenDevice(name, driver string, mtu int) (tunnel.Device, error)
	SetAddress(dev string, p netip.Prefix) error
	LinkUp(dev string, mtu int) error
	ReplaceRoute(dev string, dst netip.Prefix) error
	DeleteRoute(dev string, dst netip.Prefix) error
	SetDNS(dev string, servers []netip.Addr, domains []string) error
	RevertDNS(dev string) error
}

// osSystem is the laptop's real network stack.
type osSystem struct{}

func (osSystem) OpenDevice(name, driver string, mtu int) (tunnel.Device, error) {
	return tunnel.OpenDevice(name, driver, mtu)
}
func (osSystem) SetAddress(dev string, p netip.Prefix) error { return tunnel.SetAddress(dev, p) }
func (osSystem) LinkUp(dev string, mtu int) error            { return tunnel.LinkUp(dev, mtu) }
func (osSystem) ReplaceRoute(dev string, dst netip.Prefix) error {
	return tunnel.ReplaceRoute(dev, dst)
}
func (osSystem) DeleteRoute(dev string, dst netip.Prefix) error { return tunnel.DeleteRoute(dev, dst) }
func (osSystem) SetDNS(dev string, servers []netip.Addr, domains []string) error {
	return setDNS(dev, servers, domains)
}
func (osSystem) RevertDNS(dev string) error { return revertDNS(dev) }
