package client

// Live push (tunnel/push.go): the gateway sends a new config when a reload
// changes this device's routes, DNS or MTU. netState.apply is a reconcile,
// so applying it adds new routes before removing stale ones and the tunnel
// stays up throughout.

import (
	"fmt"
	"slices"

	"github.com/sallyport/sallyport/tunnel"
)

// onPush applies a FramePush from the gateway to the live session. A push
// that cannot be decoded or applied ends the session (the reconnect gets a
// fresh config).
func (c *Client) onPush(payload []byte) error {
	c.mu.Lock()
	cur := c.pushed
	c.mu.Unlock()
	pc, err := tunnel.DecodePush(payload, cur)
	if err != nil {
		return fmt.Errorf("pushed config from gateway: %w", err)
	}
	applied := pc
	applied.MTU = c.tunMTU(pc.MTU) // the datagram size caps it on the datagram path (quic.go)
	if err := c.net.apply(applied); err != nil {
		return fmt.Errorf("apply pushed config: %w", err)
	}
	c.mu.Lock()
	c.pushed = pc
	server := c.server
	c.mu.Unlock()
	c.remember(pc, server)
	added, removed := diffPrefixes(cur.Routes, pc.Routes)
	c.log.Info("new config from the gateway applied", "routes", fmt.Sprint(pc.Routes), "added", fmt.Sprint(added),
		"removed", fmt.Sprint(removed), "dns", fmt.Sprint(pc.DNS), "mtu", pc.MTU)
	return nil
}

func diffPrefixes[T comparable](old, cur []T) (added, removed []T) {
	for _, p := range cur {
		if !slices.Contains(old, p) {
			added = append(added, p)
		}
	}
	for _, p := range old {
		if !slices.Contains(cur, p) {
			removed = append(removed, p)
		}
	}
	return added, removed
}
