package client

// Drain (docs/admin-guide.md, "Drain"): a gateway being drained closes every session
// with reason "drain". The client reconnects at once, without backoff, and
// dials the gateways of `servers` starting after the one that drained it
// (that one is tried last).

import (
	"slices"

	"github.com/sallyport/sallyport/tunnel"
)

// codeDrain is the close reason of a draining gateway.
const codeDrain = string(tunnel.ReasonDrain)

// dialOrder is the order to try the gateways in: servers as configured,
// or, right after a drain, rotated to start after the drained one. The
// rotation is used once.
func (c *Client) dialOrder() []string {
	c.mu.Lock()
	skip := c.skip
	c.skip = ""
	c.mu.Unlock()
	return rotateAfter(c.servers(), skip)
}

// rotateAfter returns servers starting after skip, with skip last; servers
// unchanged when skip is not among them.
func rotateAfter(servers []string, skip string) []string {
	i := slices.Index(servers, skip)
	if i < 0 || len(servers) < 2 {
		return servers
	}
	return append(slices.Clone(servers[i+1:]), servers[:i+1]...)
}
