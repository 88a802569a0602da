package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/godbus/dbus/v5"

	"github.com/sallyport/sallyport/internal/atomicfile"
)

// DNS modes, as `sallyport status` shows them.
const (
	DNSModeResolved   = "systemd-resolved"
	DNSModeResolvConf = "resolv.conf"
)

// resolvConfPath is the live resolv.conf of the fallback; a variable so
// tests can point it at a temporary file. Its backup lives in the state
// directory (the unit's StateDirectory=, /var/lib/sallyport), so it
// survives a crash and a reboot.
var resolvConfPath = "/etc/resolv.conf"

func resolvConfFor(stateDir, dev string) resolvConf {
	return resolvConf{path: resolvConfPath, backup: filepath.Join(stateDir, "resolv.conf."+dev+".orig"), dev: dev}
}

// setDNS gives dev its resolvers and routing domains: per link through
// systemd-resolved's D-Bus API where resolved runs (only the pushed domains
// go to the tunnel's resolvers), otherwise by rewriting /etc/resolv.conf
// with a backup in stateDir. It returns the mode used. In resolved mode
// the link is recorded in stateDir first (linkRecord), so that `down`
// after a crash knows which link to revert.
func setDNS(stateDir, dev string, servers []netip.Addr, domains []string) (string, error) {
	conn, err := resolvedBus()
	if err == nil {
		defer conn.Close()
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return DNSModeResolved, fmt.Errorf("DNS for %s: %w", dev, err)
		}
		if err := saveLinkRecord(stateDir, linkRecord{Index: int32(ifi.Index), Name: dev}); err != nil {
			return DNSModeResolved, err
		}
		return DNSModeResolved, resolvedSetLink(conn, int32(ifi.Index), servers, domains)
	}
	return DNSModeResolvConf, resolvConfFor(stateDir, dev).set(servers, domains)
}

// revertDNS undoes setDNS in whichever mode is in force, and restores a
// resolv.conf left behind by a run that crashed.
func revertDNS(stateDir, dev string) error {
	var errs []error
	if conn, err := resolvedBus(); err == nil {
		defer conn.Close()
		if ifi, err := net.InterfaceByName(dev); err == nil {
			errs = append(errs, resolvedCall(conn, "RevertLink", int32(ifi.Index)))
		}
	}
	errs = append(errs, removeLinkRecord(stateDir, dev), resolvConfFor(stateDir, dev).restore())
	return errors.Join(errs...)
}

// recoverDNS undoes what a run on device dev that did not exit cleanly
// (kill -9, a crash, power loss) left of its DNS: a rewritten resolv.conf
// goes back to the original byte for byte (unless someone rewrote it
// since), and the link it gave resolved its DNS is reverted (resolved
// forgets a link that is gone by itself; the revert covers one that is
// still there, and never touches a link that now has another name). It
// runs before a new device gets any DNS, and at `down` when no client
// runs, and returns how many of the two it undid.
func recoverDNS(stateDir, dev string) (int, error) {
	n := 0
	restored, err := resolvConfFor(stateDir, dev).undo()
	if restored {
		n++
	}
	errs := []error{err}
	rec, ok, err := loadLinkRecord(stateDir, dev)
	errs = append(errs, err)
	if ok {
		ifi, ierr := net.InterfaceByIndex(int(rec.Index))
		if ierr != nil || ifi.Name == rec.Name {
			if conn, err := resolvedBus(); err == nil {
				// An error here is resolved not knowing a link that is
				// gone: nothing left to undo.
				_ = resolvedCall(conn, "RevertLink", rec.Index)
				conn.Close()
				n++
			}
		}
		errs = append(errs, removeLinkRecord(stateDir, dev))
	}
	return n, errors.Join(errs...)
}

// linkRecord names the link whose DNS was given to resolved.
type linkRecord struct {
	Index int32  `json:"index"`
	Name  string `json:"name"`
}

func linkRecordFile(stateDir, dev string) string {
	return filepath.Join(stateDir, "resolved."+dev+".link")
}

func saveLinkRecord(stateDir string, r linkRecord) error {
	b, _ := json.Marshal(r)
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return fmt.Errorf("DNS for %s: record the link: %w", r.Name, err)
	}
	if err := atomicfile.Write(linkRecordFile(stateDir, r.Name), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("DNS for %s: record the link: %w", r.Name, err)
	}
	return nil
}

// loadLinkRecord reads the record of dev; ok is false when there is none.
// A record that cannot be parsed is reported and treated as none.
func loadLinkRecord(stateDir, dev string) (linkRecord, bool, error) {
	path := linkRecordFile(stateDir, dev)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return linkRecord{}, false, nil
	}
	var r linkRecord
	if err == nil && len(b) > 4096 {
		err = errors.New("too large")
	}
	if err == nil {
		err = json.Unmarshal(b, &r)
	}
	if err != nil || r.Index <= 0 || r.Name != dev {
		if err == nil {
			err = fmt.Errorf("names link %d %q, not %s", r.Index, r.Name, dev)
		}
		return linkRecord{}, false, errors.Join(fmt.Errorf("resolved link record %s: %w", path, err), removeLinkRecord(stateDir, dev))
	}
	return r, true, nil
}

func removeLinkRecord(stateDir, dev string) error {
	if err := os.Remove(linkRecordFile(stateDir, dev)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove resolved link record: %w", err)
	}
	return nil
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

func resolvedSetLink(conn *dbus.Conn, idx int32, servers []netip.Addr, domains []string) error {
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
