package client

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/client/policyroute"
	"github.com/sallyport/sallyport/internal/atomicfile"
	"github.com/sallyport/sallyport/internal/userfile"
	"github.com/sallyport/sallyport/tunnel"
)

// netState is what the client has changed on the laptop: the TUN addresses
// and MTU, the routes in sallyport's table and the rules that lead there
// (route.go), the kill switch (killswitch.go) and DNS. apply reconciles it
// with each pushed config (so a reconnect never duplicates or strands a
// route); teardown undoes exactly what it did.
type netState struct {
	sys      system
	dev      string
	log      *slog.Logger
	table    int      // routing table and fwmark ([tunnel] table)
	local    *bool    // [tunnel] kill_switch in the client file
	allowLAN bool     // [tunnel] allow_lan
	servers  []string // configured gateways (host:port)
	// prev is the device a crashed run of this profile had, when it was
	// another than dev and is gone (the kernel gave sp1 then, sp0 now),
	// and prevTable its routing table when that followed the device (0
	// when the table is the same): start takes over what it left.
	prev      string
	prevTable int

	mu      sync.Mutex
	addrs   []netip.Prefix
	routes  []policyroute.TableRoute
	rules   []policyroute.Rule
	kill    bool   // the kill switch is in place and this client owns it
	dnsMode string // how DNS was set ("" while not set)
	closing atomic.Bool
}

// start runs once before the first connection, so that the laptop fails
// closed from the first second: it adopts the routes and rules a crashed
// client left behind (adoptRouting), puts the kill switch in place when
// killAtStart says so (the client file, a crashed client's table, or the
// remembered config: memory.go), without a moment in between where
// traffic could leave, and refuses the remembered pushed prefixes until
// the first session routes them.
func (n *netState) start(b boot) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.adoptRouting()
	exists, err := n.sys.KillSwitchExists(killTableName(n.dev))
	if err != nil {
		n.log.Warn("cannot check for an existing kill switch", "err", err)
	}
	prevKill := false
	if n.prev != "" {
		if prevKill, err = n.sys.KillSwitchExists(killTableName(n.prev)); err != nil {
			n.log.Warn("cannot check for the kill switch of a crashed run", "device", n.prev, "err", err)
		}
		exists = exists || prevKill
	}
	if b.err != nil {
		n.log.Warn("cannot read what the gateway said last time; failing closed until it says again", "err", b.err)
	}
	kill := killAtStart(n.local, exists, b)
	if kill {
		if err := n.installKill(); err != nil {
			return err
		}
	}
	table := "inet " + killTableName(n.dev)
	switch {
	case exists:
		n.log.Info("kill switch adopted: traffic outside the tunnel stays blocked", "table", table)
	case kill && n.local != nil && *n.local:
		n.log.Info("kill switch on: traffic outside the tunnel is blocked", "table", table)
	case kill && b.mem != nil:
		msg := "kill switch on before the first connection, as the gateway's last config asked: traffic outside the tunnel is blocked"
		if n.local != nil {
			msg = "kill switch on before the first connection: the gateway's last config pushed kill_switch = true, which wins over kill_switch = false in the client file as it does while connected"
		}
		n.log.Info(msg, "table", table, "remembered", b.path, "from", b.mem.Server, "at", b.mem.At.Format(time.RFC3339))
	case kill:
		n.log.Info("kill switch on: traffic outside the tunnel is blocked", "table", table)
	case n.local != nil && b.mem != nil && fullTunnel(b.mem.Routes):
		n.log.Info("kill switch off until the first connection: the client file says kill_switch = false (the gateway's last config was a full tunnel)")
	}
	if b.mem != nil {
		if err := n.refuse(b.mem.bootRoutes(kill), b.mem.IPv6, b.path); err != nil {
			return err
		}
	}
	return n.takeOver(prevKill)
}

// takeOver moves what a crashed run of this profile left on another
// device (n.prev) to this one, after this one's kill switch and refused
// prefixes are in place: the prefixes its table still refuses are
// refused in this table, then its rules, routes and kill switch go. Left
// there, they would refuse this tunnel's own traffic: the old kill switch
// lets out only what leaves through the old device, and the old table's
// rules do not skip this client's mark.
func (n *netState) takeOver(prevKill bool) error {
	if n.prev == "" {
		return nil
	}
	if n.prevTable != 0 && n.prevTable != n.table {
		routes, err := n.sys.TableRoutes(n.prevTable)
		if err != nil {
			n.log.Warn("cannot list the routes of a crashed run", "device", n.prev, "table", n.prevTable, "err", err)
		}
		var refused []netip.Prefix
		for _, r := range routes {
			if r.Unreachable && !slices.Contains(refused, r.Dst) {
				refused = append(refused, r.Dst)
			}
		}
		// Planned as if the tunnel had IPv6: each prefix gets exactly the
		// unreachable route it had.
		if err := n.refuse(refused, true, "the table of "+n.prev); err != nil {
			return err
		}
		// Its rules (but one this client now has too: the rule into main
		// is the same for every table) and its routes go.
		for _, t := range []int{n.prevTable, policyroute.TableMain} {
			rules, err := n.sys.Rules(t)
			if err != nil {
				n.log.Warn("cannot list routing rules", "err", err)
			}
			for _, r := range rules {
				if ours(r, n.prevTable) && !slices.Contains(n.rules, r) {
					if err := n.sys.DeleteRule(r); err != nil {
						n.log.Warn("remove rule failed", "rule", r.String(), "err", err)
					}
				}
			}
		}
		for _, r := range routes {
			if err := n.sys.DeleteTableRoute(r); err != nil {
				n.log.Warn("remove route failed", "route", r.String(), "err", err)
			}
		}
	}
	if prevKill {
		if err := n.sys.RemoveKillSwitch(killTableName(n.prev)); err != nil {
			return fmt.Errorf("remove the kill switch of %s, which a crashed run left: %w", n.prev, err)
		}
	}
	n.log.Info("took over what a crashed run of this profile left on another device", "device", n.prev, "table", n.prevTable)
	return nil
}

// refuse installs the unreachable routes (and the rules that lead to
// them) that prefixes would have behind their routes through the TUN: the
// state a crashed client leaves, for a laptop that starts without a
// session. The first pushed config reconciles them like its own.
func (n *netState) refuse(prefixes []netip.Prefix, has6 bool, from string) error {
	if len(prefixes) == 0 {
		return nil
	}
	plan := planRoutes(prefixes, n.dev, n.table, has6)
	var refused []string
	for _, r := range plan.routes {
		if !r.Unreachable {
			continue
		}
		if err := n.sys.ReplaceTableRoute(r); err != nil {
			return fmt.Errorf("add route %s: %w", r, err)
		}
		if !slices.Contains(n.routes, r) {
			n.routes = append(n.routes, r)
		}
		refused = append(refused, r.Dst.String())
	}
	for _, r := range plan.rules {
		if err := n.sys.AddRule(r); err != nil {
			return fmt.Errorf("add rule %s: %w", r, err)
		}
		if !slices.Contains(n.rules, r) {
			n.rules = append(n.rules, r)
		}
	}
	n.log.Info("the company's prefixes are refused until the tunnel is up, as the gateway's last config pushed them",
		"prefixes", strings.Join(refused, ","), "remembered", from)
	return nil
}

// adoptRouting takes over what a client that did not exit cleanly left in
// the table and its rules: its routes through its TUN went with the TUN,
// the unreachable ones behind them (route.go) still refuse the company's
// prefixes. They stay in place, so there is no moment in which those
// prefixes could leave in the clear; the first pushed config reconciles
// them like its own (new routes first, stale ones after), and a `down`
// removes them.
func (n *netState) adoptRouting() {
	routes, err := n.sys.TableRoutes(n.table)
	if err != nil {
		n.log.Warn("cannot list routes", "table", n.table, "err", err)
	}
	var rules []policyroute.Rule
	for _, t := range []int{n.table, policyroute.TableMain} {
		rs, err := n.sys.Rules(t)
		if err != nil {
			n.log.Warn("cannot list routing rules", "err", err)
		}
		for _, r := range rs {
			if ours(r, n.table) && !slices.Contains(rules, r) {
				rules = append(rules, r)
			}
		}
	}
	n.routes, n.rules = routes, rules
	if len(routes)+len(rules) > 0 {
		n.log.Info("kept the routes and rules an earlier client left: its prefixes stay refused until the tunnel is up",
			"table", n.table, "routes", len(routes), "rules", len(rules))
	}
}

func (n *netState) installKill() error {
	var lan []netip.Prefix
	if n.allowLAN {
		var err error
		if lan, err = n.sys.ConnectedPrefixes(n.dev); err != nil {
			n.log.Warn("allow_lan: cannot list the local networks; the LAN stays blocked", "err", err)
		}
		if slices.ContainsFunc(lan, netip.Prefix.IsValid) {
			lan = append(lan, netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("ff02::/16"), netip.MustParsePrefix("224.0.0.0/24"))
		}
	}
	if err := n.sys.InstallKillSwitch(newKillSpec(n.dev, uint32(n.table), n.servers, lan)); err != nil {
		return err
	}
	n.kill = true
	return nil
}

// setMTU changes the tunnel's MTU alone (the datagram path's size grew).
func (n *netState) setMTU(mtu int) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sys.LinkUp(n.dev, mtu)
}

// apply sets addresses, MTU, routes, rules and the kill switch from pc.
func (n *netState) apply(pc tunnel.Config) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	addrs := pc.Addresses()
	for _, a := range addrs {
		if err := n.sys.SetAddress(n.dev, a); err != nil {
			return fmt.Errorf("set address %s on %s: %w", a, n.dev, err)
		}
	}
	// A family the gateway no longer gives an address for (a dual-stack
	// session followed by a v4-only one) loses its old address.
	for _, old := range n.addrs {
		if !slices.ContainsFunc(addrs, func(p netip.Prefix) bool { return p.Addr().Is6() == old.Addr().Is6() }) {
			if err := n.sys.RemoveAddress(n.dev, old); err != nil {
				n.log.Warn("remove stale address failed", "address", old.String(), "err", err)
			}
		}
	}
	n.addrs = addrs
	if err := n.sys.LinkUp(n.dev, pc.MTU); err != nil {
		return fmt.Errorf("bring up %s with MTU %d: %w", n.dev, pc.MTU, err)
	}
	has6 := slices.ContainsFunc(addrs, func(p netip.Prefix) bool { return p.Addr().Is6() })
	plan := planRoutes(pc.Routes, n.dev, n.table, has6)
	// New routes and rules first, stale ones after: a prefix that stays is
	// never without its route.
	var routes []policyroute.TableRoute
	for _, r := range plan.routes {
		if err := n.sys.ReplaceTableRoute(r); err != nil {
			return fmt.Errorf("add route %s: %w", r, err)
		}
		routes = append(routes, r)
	}
	for _, r := range n.routes {
		if !slices.Contains(routes, r) {
			if err := n.sys.DeleteTableRoute(r); err != nil {
				n.log.Warn("remove stale route failed", "route", r.String(), "err", err)
			}
		}
	}
	n.routes = routes
	var rules []policyroute.Rule
	for _, r := range plan.rules {
		if err := n.sys.AddRule(r); err != nil {
			return fmt.Errorf("add rule %s: %w", r, err)
		}
		rules = append(rules, r)
	}
	for _, r := range n.rules {
		if !slices.Contains(rules, r) {
			if err := n.sys.DeleteRule(r); err != nil {
				n.log.Warn("remove stale rule failed", "rule", r.String(), "err", err)
			}
		}
	}
	n.rules = rules
	switch want := wantKillSwitch(n.local, pc.KillSwitch, fullTunnel(pc.Routes)); {
	case want:
		if err := n.installKill(); err != nil {
			return err
		}
	case n.kill:
		if err := n.sys.RemoveKillSwitch(killTableName(n.dev)); err != nil {
			return err
		}
		n.kill = false
		n.log.Info("kill switch off (pushed config)")
	}
	if len(pc.DNS) > 0 || len(pc.SearchDomains) > 0 {
		mode, err := n.sys.SetDNS(n.dev, pc.DNS, pc.SearchDomains)
		if err != nil {
			n.log.Warn("pushed DNS not applied; set these resolvers by hand", "dns", fmt.Sprint(pc.DNS),
				"domains", fmt.Sprint(pc.SearchDomains), "mode", mode, "err", err)
		} else {
			n.dnsMode = mode
		}
	} else if n.dnsMode != "" {
		// A push (or a reconnect) without DNS: the old resolvers go.
		if err := n.sys.RevertDNS(n.dev); err != nil {
			n.log.Warn("revert DNS failed", "mode", n.dnsMode, "err", err)
		} else {
			n.dnsMode = ""
		}
	}
	return nil
}

// teardown removes the rules, routes, kill switch and DNS settings. Closing
// the TUN device afterwards removes the link and its addresses.
func (n *netState) teardown() {
	n.closing.Store(true)
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, r := range n.rules {
		if err := n.sys.DeleteRule(r); err != nil {
			n.log.Warn("remove rule failed", "rule", r.String(), "err", err)
		}
	}
	n.rules = nil
	for _, r := range n.routes {
		if err := n.sys.DeleteTableRoute(r); err != nil {
			n.log.Warn("remove route failed", "route", r.String(), "err", err)
		}
	}
	n.routes = nil
	if n.kill {
		if err := n.sys.RemoveKillSwitch(killTableName(n.dev)); err != nil {
			n.log.Warn("remove kill switch failed", "err", err)
		} else {
			n.kill = false
		}
	}
	if n.dnsMode != "" {
		if err := n.sys.RevertDNS(n.dev); err != nil {
			n.log.Warn("revert DNS failed", "mode", n.dnsMode, "err", err)
		}
		n.dnsMode = ""
	}
}

// Installed is what the kernel really has of the client's routing and kill
// switch, read back for `sallyport status`.
type Installed struct {
	Table      int      `json:"table"`
	Routes     []string `json:"routes"`
	Rules      []string `json:"rules"`
	KillSwitch bool     `json:"kill_switch"`
}

// installed reads the table, the client's rules and the kill switch back
// from the kernel.
func installed(sys system, dev string, table int) (Installed, error) {
	in := Installed{Table: table, Routes: []string{}, Rules: []string{}}
	var errs []error
	routes, err := sys.TableRoutes(table)
	errs = append(errs, err)
	for _, r := range routes {
		in.Routes = append(in.Routes, r.String())
	}
	for _, t := range []int{table, policyroute.TableMain} {
		rules, err := sys.Rules(t)
		errs = append(errs, err)
		for _, r := range rules {
			if ours(r, table) {
				in.Rules = append(in.Rules, r.String())
			}
		}
	}
	slices.Sort(in.Rules)
	in.KillSwitch, err = sys.KillSwitchExists(killTableName(dev))
	errs = append(errs, err)
	return in, errors.Join(errs...)
}

// removeRouting deletes every rule of the client using table and every
// route in the table, and returns how many it removed.
func removeRouting(sys system, table int, log *slog.Logger) int {
	n := 0
	for _, t := range []int{table, policyroute.TableMain} {
		rules, err := sys.Rules(t)
		if err != nil {
			log.Warn("cannot list routing rules", "err", err)
		}
		for _, r := range rules {
			if !ours(r, table) {
				continue
			}
			if err := sys.DeleteRule(r); err != nil {
				log.Warn("remove rule failed", "rule", r.String(), "err", err)
				continue
			}
			n++
		}
	}
	routes, err := sys.TableRoutes(table)
	if err != nil {
		log.Warn("cannot list routes", "table", table, "err", err)
	}
	for _, r := range routes {
		if err := sys.DeleteTableRoute(r); err != nil {
			log.Warn("remove route failed", "route", r.String(), "err", err)
			continue
		}
		n++
	}
	return n
}

// RemoveLeftovers removes what a client that did not exit cleanly (kill -9,
// a crash, power loss with a persistent ruleset) left on the laptop: its
// kill switch, its routing rules, the routes in its table, and its DNS
// (resolv.conf restored byte for byte, resolved's link reverted). It
// returns how many of those it removed. `sallyport down` runs it when no
// client answers.
//
// A device that exists is left alone: a TUN lives only as long as the
// process holding it, so its table, kill switch and DNS belong to a
// running client, most likely another profile's that got the same spN
// after this one crashed (or a client with a socket `down` did not find).
// Removing them would send that client's traffic out in the clear.
func RemoveLeftovers(cfg *Config, log *slog.Logger) (int, error) {
	sys := osSystem{stateDir: cfg.stateDirectory()}
	dev, rt := cfg.Tunnel.Device, cfg.Tunnel.Table
	auto := dev == AutoDevice
	if auto {
		// The device the kernel gave this profile, recorded by Run.
		if dev = readDeviceRecord(cfg); dev == "" {
			return 0, nil // never ran, or exited cleanly
		}
		if cfg.Tunnel.tableAuto {
			rt = TableFor(dev)
		}
	}
	if linkExists(dev) {
		log.Info("left alone: a running tunnel holds the device, so its routes, kill switch and DNS are not a crashed client's",
			"device", dev, "table", rt)
		return 0, nil
	}
	if auto {
		defer removeDeviceRecord(cfg)
	}
	n := removeRouting(sys, rt, log)
	dns, dnsErr := recoverDNS(sys.stateDir, dev)
	n += dns
	table := killTableName(dev)
	exists, err := sys.KillSwitchExists(table)
	if err != nil {
		return n, errors.Join(dnsErr, err)
	}
	if exists {
		if err := sys.RemoveKillSwitch(table); err != nil {
			return n, errors.Join(dnsErr, err)
		}
		n++
	}
	return n, dnsErr
}

// linkExists reports whether a network interface named dev exists.
func linkExists(dev string) bool {
	_, err := net.InterfaceByName(dev)
	return err == nil
}

// deviceFile records which spN a profile without a configured device got,
// in the state directory: after a crash and a reboot (which empties the
// runtime directory) `down` and the next `up` still know which device's
// DNS to restore. It is named after the admin socket, which is one per
// running client.
func deviceFile(cfg *Config) string {
	return filepath.Join(cfg.stateDirectory(), filepath.Base(cfg.Admin.Socket)+".dev")
}

// legacyDeviceFile is where the record lived before, beside the socket.
func legacyDeviceFile(cfg *Config) string { return cfg.Admin.Socket + ".dev" }

// readDeviceRecord returns the device recorded for cfg ("" when none).
func readDeviceRecord(cfg *Config) string {
	for _, p := range []string{deviceFile(cfg), legacyDeviceFile(cfg)} {
		if b, err := userfile.Read(p, 256); err == nil {
			if dev := strings.TrimSpace(string(b)); dev != "" && !strings.ContainsAny(dev, "/ \t\n") {
				return dev
			}
		}
	}
	return ""
}

// writeDeviceRecord records dev for cfg (atomically: a crash leaves the
// old record or the new one).
func writeDeviceRecord(cfg *Config, dev string) error {
	if err := os.MkdirAll(cfg.stateDirectory(), 0o700); err != nil {
		return err
	}
	return atomicfile.Write(deviceFile(cfg), []byte(dev+"\n"), 0o600)
}

func removeDeviceRecord(cfg *Config) {
	_ = os.Remove(deviceFile(cfg))
	_ = os.Remove(legacyDeviceFile(cfg))
}

// DNSMode says how the pushed DNS is applied ("" when none is).
func (n *netState) DNSMode() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dnsMode
}
