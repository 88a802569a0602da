package tunnel

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// NotSentLowat bounds how much not-yet-sent data the kernel keeps queued on
// the outer TCP socket. Without it, autotuning lets megabytes of tunnel
// traffic sit in the send buffer, and every packet inside the tunnel (a ping,
// an ACK) waits behind them: TCP-over-TCP bufferbloat. Batches already
// coalesce writes in user space, so a small queue costs no throughput.
const NotSentLowat = 128 << 10

// TuneTCP sets the outer stream's socket options: TCP_NODELAY (a flushed
// batch goes out now) and TCP_NOTSENT_LOWAT. Buffer sizes are left to
// autotuning. Errors are ignored: the options only tune.
func TuneTCP(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	_ = tc.SetNoDelay(true)
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, NotSentLowat)
	})
}

// Backlog reports the bytes received on the outer TCP socket that the
// process has not read yet (SIOCINQ), for AQM. Make it once per connection;
// each call is one ioctl and allocates nothing.
type Backlog struct {
	raw interface {
		Control(func(fd uintptr)) error
	}
	fn func(fd uintptr)
	n  int
}

// NewBacklog returns a Backlog for c, or nil when c is not a TCP socket.
func NewBacklog(c net.Conn) *Backlog {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	b := &Backlog{raw: raw}
	b.fn = func(fd uintptr) {
		n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		if err != nil {
			n = 0
		}
		b.n = n
	}
	return b
}

// Bytes is the unread backlog; 0 for a nil Backlog or on error.
func (b *Backlog) Bytes() int {
	if b == nil {
		return 0
	}
	b.n = 0
	_ = b.raw.Control(b.fn)
	return b.n
}

// MarkControl returns a net.Dialer Control function that sets SO_MARK on
// the socket to mark (0: none). The laptop marks its connection to the
// gateway so its policy routing rules (`not fwmark`) let it use the main
// table, outside the tunnel; setting a mark needs CAP_NET_ADMIN.
func MarkControl(mark uint32) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		if mark == 0 {
			return nil
		}
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("set SO_MARK %#x: %w", mark, serr)
		}
		return nil
	}
}
