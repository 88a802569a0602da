package client

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/godbus/dbus/v5"
)

// DNS modes, as `sallyport status` shows them.
const (
	DNSModeResolved   = "systemd-resolved"
	DNSModeResolvConf = "resolv.conf"
)

// Paths of the resolv.conf fallback; variables so tests can point them at
// a temporary directory. The backup lives in the unit's StateDirectory
// ($STATE_DIRECTORY, /var/lib/sallyport) so it survives a crash and a
// reboot.
var (
	resolvConfPath = "/etc/resolv.conf"
	dnsStateDir    = func() string {
		if d := os.Getenv("STATE_DIRECTORY"); d != "" {
			return strings.Split(d, ":")[0]
		}
		return "/var/lib/sallyport"
	}
)

func resolvConfFor(dev string) resolvConf {
	return resolvConf{path: resolvConfPath, backup: filepath.Join(dnsStateDir(), "resolv.conf."+dev+".orig"), dev: dev}
}

// setDNS gives dev its resolvers and routing domains: per link through
// systemd-resolved's D-Bus API where resolved runs (only the pushed domains
// go to the tunnel's resolvers), otherwise by rewriting /etc/resolv.conf
// with a backup. It returns the mode used.
func setDNS(dev string, servers []netip.Addr, domains []string) (string, error) {
	conn, err := resolvedBus()
	if err == nil {
		defer conn.Close()
		return DNSModeResolved, resolvedSetLink(conn, dev, servers, domains)
	}
	return DNSModeResolvConf, resolvConfFor(dev).set(servers, domains)
}

// revertDNS undoes setDNS in whichever mode is in force, and restores a
// resolv.conf left behind by a run that crashed.
func revertDNS(dev string) error {
	var errs []error
	if conn, err := resolvedBus(); err == nil {
		defer conn.Close()
		if ifi, err := net.InterfaceByName(dev); err == nil {
			errs = append(errs, resolvedCall(conn, "RevertLink", int32(ifi.Index)))
		}
	}
	errs = append(errs, resolvConfFor(dev).restore())
	return errors.Join(errs...)
}

// recoverDNS restores a resolv.conf that a run of this device left
// rewritten when it crashed (its backup is still there); a new device has
// no resolved link settings to undo.
func recoverDNS(dev string) {
	_ = resolvConfFor(dev).restore()
}

const (
	resolvedName = "org.freedesktop.resolve1"
	resolvedPath = "/org/freedesktop/resolve1"
)

// resolvedBus connects to the system bus (DBUS_SYSTEM_BUS_ADDRESS or the
// default socket) and checks that systemd-resolved owns its name.
func resolvedBus() (*dbus.Conn, error) {
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, err
	}
	var has bool
	if err := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, resolvedName).Store(&has); err != nil || !has {
		conn.Close()
		if err == nil {
			err = errors.New("systemd-resolved is not running")
		}
		return nil, err
	}
	return conn, nil
}

// linkAddress is resolved's (iay): an address family and the raw address.
type linkAddress struct {
	Family  int32
	Address []byte
}

// linkDomain is resolved's (sb): a domain and whether it only routes
// queries (the "~domain" of resolvectl) rather than also being searched.
type linkDomain struct {
	Domain      string
	RoutingOnly bool
}

func resolvedSetLink(conn *dbus.Conn, dev string, servers []netip.Addr, domains []string) error {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return fmt.Errorf("DNS for %s: %w", dev, err)
	}
	idx := int32(ifi.Index)
	if len(servers) > 0 {
		addrs := make([]linkAddress, 0, len(servers))
		for _, s := range servers {
			s = s.Unmap()
			fam := int32(2) // AF_INET
			if s.Is6() {
				fam = 10 // AF_INET6
			}
			addrs = append(addrs, linkAddress{fam, s.AsSlice()})
		}
		if err := resolvedCall(conn, "SetLinkDNS", idx, addrs); err != nil {
			return err
		}
	}
	if len(domains) > 0 {
		ds := make([]linkDomain, 0, len(domains))
		for _, d := range domains {
			ds = append(ds, linkDomain{strings.TrimPrefix(d, "~"), true})
		}
		if err := resolvedCall(conn, "SetLinkDomains", idx, ds); err != nil {
			return err
		}
	}
	return nil
}

func resolvedCall(conn *dbus.Conn, method string, args ...any) error {
	call := conn.Object(resolvedName, resolvedPath).Call(resolvedName+".Manager."+method, 0, args...)
	if call.Err != nil {
		return fmt.Errorf("systemd-resolved %s: %w", method, call.Err)
	}
	return nil
}
