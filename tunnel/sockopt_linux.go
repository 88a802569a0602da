package tunnel

import (
	"net"

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
