package client

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/sallyport/sallyport/tunnel"
)

// netState is what the client has changed on the laptop: the TUN address,
// MTU, routes and DNS. apply reconciles it with each pushed config (so a
// reconnect never duplicates or strands a route); teardown undoes all of it.
type netState struct {
	sys     system
	dev     string
	log     *slog.Logger
	mu      sync.Mutex
	addr    netip.Prefix
	routes  []netip.Prefix
	dns     bool
	closing atomic.Bool
}

// apply sets address, MTU and routes from pc. Routes that would capture the
// gateway's own address are refused (the tunnel would route itself).
func (n *netState) apply(pc tunnel.Config, servers []string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := n.sys.SetAddress(n.dev, pc.Address); err != nil {
		return fmt.Errorf("set address %s on %s: %w", pc.Address, n.dev, err)
	}
	n.addr = pc.Address
	if err := n.sys.LinkUp(n.dev, pc.MTU); err != nil {
		return fmt.Errorf("bring up %s with MTU %d: %w", n.dev, pc.MTU, err)
	}
	gateways := serverAddrs(servers)
	var want []netip.Prefix
	for _, r := range pc.Routes {
		r = r.Masked()
		if slices.ContainsFunc(gateways, r.Contains) {
			n.log.Warn("pushed route not installed: it contains the gateway's own address", "route", r.String())
			continue
		}
		if !slices.Contains(want, r) {
			want = append(want, r)
		}
	}
	for _, r := range n.routes {
		if !slices.Contains(want, r) {
			if err := n.sys.DeleteRoute(n.dev, r); err != nil {
				n.log.Warn("remove stale route failed", "route", r.String(), "err", err)
			}
		}
	}
	n.routes = n.routes[:0]
	for _, r := range want {
		if err := n.sys.ReplaceRoute(n.dev, r); err != nil {
			return fmt.Errorf("add route %s via %s: %w", r, n.dev, err)
		}
		n.routes = append(n.routes, r)
	}
	if len(pc.DNS) > 0 || len(pc.SearchDomains) > 0 {
		if err := n.sys.SetDNS(n.dev, pc.DNS, pc.SearchDomains); err != nil {
			n.log.Warn("pushed DNS not applied; set these resolvers by hand", "dns", fmt.Sprint(pc.DNS),
				"domains", fmt.Sprint(pc.SearchDomains), "err", err)
		} else {
			n.dns = true
		}
	}
	return nil
}

// teardown removes routes, DNS and the address. Closing the TUN device
// afterwards removes the link itself.
func (n *netState) teardown() {
	n.closing.Store(true)
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, r := range n.routes {
		if err := n.sys.DeleteRoute(n.dev, r); err != nil {
			n.log.Warn("remove route failed", "route", r.String(), "err", err)
		}
	}
	n.routes = nil
	if n.dns {
		if err := n.sys.RevertDNS(n.dev); err != nil {
			n.log.Warn("revert DNS failed", "err", err)
		}
		n.dns = false
	}
}

// serverAddrs resolves the literal IPs among the gateway addresses.
func serverAddrs(servers []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range servers {
		host, _, err := net.SplitHostPort(s)
		if err != nil {
			continue
		}
		if a, err := netip.ParseAddr(host); err == nil {
			out = append(out, a)
			continue
		}
		if ips, err := net.LookupIP(host); err == nil {
			for _, ip := range ips {
				if a, ok := netip.AddrFromSlice(ip); ok {
					out = append(out, a.Unmap())
				}
			}
		}
	}
	return out
}
