package server

// NAT on the gateway (tunnel.masquerade). Routed mode is the default: LAN
// hosts see each device's own tunnel address, which keeps logs and
// firewall rules auditable, but the LAN needs a route back to the pools.
// With masquerade on, the gateway source-NATs packets from the pools that
// leave through the listed interfaces (or, with "auto", the interfaces the
// kernel routes the policies' pushed routes through) to its own address
// there: nftables masquerade rules in a table of sallyport's own
// (inet sallyport-gw-<tun>), created when the gateway starts and deleted
// when it stops. No other table is read or touched. nat_linux.go talks to
// the kernel; nat_other.go refuses.

import (
	"fmt"
	"net/netip"
	"slices"
)

// natSpec is what the NAT table holds: masquerade for packets from Pools
// leaving through any of Out.
type natSpec struct {
	Table string
	Pools []netip.Prefix
	Out   []string
}

// natTableName is the gateway's nftables table (family inet) for its TUN
// dev. The laptop's kill switch uses sallyport-<dev>: a gateway and a
// client on one machine never share a table.
func natTableName(dev string) string { return "sallyport-gw-" + dev }

// startNAT installs the masquerade table when tunnel.masquerade asks for
// it and returns the function that removes it (nil when NAT is off).
func (s *Server) startNAT(tun string) (stop func(), err error) {
	cfg := s.config()
	out := cfg.Tunnel.Masquerade
	if len(out) == 0 {
		return nil, nil
	}
	if len(out) == 1 && out[0] == MasqueradeAuto {
		routes := s.trustNow().policies.Routes()
		if out, err = autoInterfaces(routes, tun); err != nil {
			return nil, fmt.Errorf("tunnel.masquerade = \"auto\": %w", err)
		}
		if len(out) == 0 {
			return nil, fmt.Errorf("tunnel.masquerade = \"auto\": no pushed route (%v) leaves through an interface of this machine; list the interfaces instead", routes)
		}
	}
	spec := natSpec{Table: natTableName(tun), Pools: s.pool.Prefixes(), Out: slices.Compact(slices.Sorted(slices.Values(out)))}
	if err := installNAT(spec); err != nil {
		return nil, err
	}
	s.log.Info("masquerading the tunnel pools", "table", "inet "+spec.Table, "pools", fmt.Sprint(spec.Pools), "out", spec.Out)
	return func() {
		if err := removeNAT(spec.Table); err != nil {
			s.log.Error("remove the NAT table", "table", "inet "+spec.Table, "error", err.Error())
			return
		}
		s.log.Info("NAT table removed", "table", "inet "+spec.Table)
	}, nil
}
