//go:build !linux

package tunnel

import (
	"net"
	"syscall"
)

// TuneTCP sets TCP_NODELAY; TCP_NOTSENT_LOWAT is Linux-only here.
func TuneTCP(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
}

// Backlog would report the outer socket's unread bytes; it is Linux-only,
// so AQM never acts elsewhere.
type Backlog struct{}

// NewBacklog returns nil off Linux.
func NewBacklog(net.Conn) *Backlog { return nil }

// Bytes is always 0 off Linux.
func (b *Backlog) Bytes() int { return 0 }

// MarkControl sets no mark off Linux (SO_MARK is Linux-only).
func MarkControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(string, string, syscall.RawConn) error { return nil }
}
