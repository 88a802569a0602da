package client

import (
	"net/netip"

	"github.com/sallyport/sallyport/client/policyroute"
	"github.com/sallyport/sallyport/tunnel"
)

// system is everything the client changes on the laptop: the TUN device,
// its addresses and MTU, the policy routing table and rules, the kill
// switch, and DNS. osSystem is the real one (netlink, nftables and
// systemd-resolved, which need root); unit tests substitute a recorder so
// Run, session and the relay run without root.
type system interface {
	OpenDevice(name, driver string, mtu int) (tunnel.Device, error)
	SetAddress(dev string, p netip.Prefix) error
	RemoveAddress(dev string, p netip.Prefix) error
	LinkUp(dev string, mtu int) error
	ReplaceTableRoute(r policyroute.TableRoute) error
	DeleteTableRoute(r policyroute.TableRoute) error
	TableRoutes(table int) ([]policyroute.TableRoute, error)
	AddRule(r policyroute.Rule) error
	DeleteRule(r policyroute.Rule) error
	Rules(table int) ([]policyroute.Rule, error)
	ConnectedPrefixes(except string) ([]netip.Prefix, error)
	InstallKillSwitch(s killSpec) error
	RemoveKillSwitch(table string) error
	KillSwitchExists(table string) (bool, error)
	// SetDNS returns the mode it used (DNSModeResolved, DNSModeResolvConf).
	SetDNS(dev string, servers []netip.Addr, domains []string) (string, error)
	RevertDNS(dev string) error
	// RecoverDNS undoes what a run on dev that did not exit cleanly left
	// of its DNS, and says how much it undid (recoverDNS).
	RecoverDNS(dev string) (int, error)
}

// osSystem is the laptop's real network stack; stateDir is where its DNS
// backups and records live.
type osSystem struct{ stateDir string }

// OpenDevice opens the TUN and undoes the DNS that an earlier run on the
// device it got (spN: the name the kernel gave, not the configured
// pattern) left behind when it did not exit cleanly.
func (s osSystem) OpenDevice(name, driver string, mtu int) (tunnel.Device, error) {
	d, err := tunnel.OpenDevice(name, driver, mtu)
	if err == nil {
		_, _ = recoverDNS(s.stateDir, d.Name())
	}
	return d, err
}
func (osSystem) SetAddress(dev string, p netip.Prefix) error { return tunnel.SetAddress(dev, p) }
func (osSystem) RemoveAddress(dev string, p netip.Prefix) error {
	return policyroute.RemoveAddress(dev, p)
}
func (osSystem) LinkUp(dev string, mtu int) error { return tunnel.LinkUp(dev, mtu) }
func (osSystem) ReplaceTableRoute(r policyroute.TableRoute) error {
	return policyroute.ReplaceTableRoute(r)
}
func (osSystem) DeleteTableRoute(r policyroute.TableRoute) error {
	return policyroute.DeleteTableRoute(r)
}
func (osSystem) TableRoutes(table int) ([]policyroute.TableRoute, error) {
	return policyroute.TableRoutes(table)
}
func (osSystem) AddRule(r policyroute.Rule) error            { return policyroute.AddRule(r) }
func (osSystem) DeleteRule(r policyroute.Rule) error         { return policyroute.DeleteRule(r) }
func (osSystem) Rules(table int) ([]policyroute.Rule, error) { return policyroute.Rules(table) }
func (osSystem) ConnectedPrefixes(except string) ([]netip.Prefix, error) {
	return policyroute.ConnectedPrefixes(except)
}
func (osSystem) InstallKillSwitch(s killSpec) error          { return installKillSwitch(s) }
func (osSystem) RemoveKillSwitch(table string) error         { return removeKillSwitch(table) }
func (osSystem) KillSwitchExists(table string) (bool, error) { return killSwitchExists(table) }
func (s osSystem) SetDNS(dev string, servers []netip.Addr, domains []string) (string, error) {
	return setDNS(s.stateDir, dev, servers, domains)
}
func (s osSystem) RevertDNS(dev string) error { return revertDNS(s.stateDir, dev) }
func (s osSystem) RecoverDNS(dev string) (int, error) {
	return recoverDNS(s.stateDir, dev)
}
