//go:build !linux

package tunnel

import "net"

// TuneTCP sets TCP_NODELAY; TCP_NOTSENT_LOWAT is Linux-only here.
func TuneTCP(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
}
