package server

// What the kernel has seen come from a TLS-stream device (duplicate.go's
// probe), from TCP_INFO.

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpProgress counts what the peer of c, a TCP connection, has
// acknowledged and sent in sequence (TCP_INFO bytes_acked +
// bytes_received): it grows only with segments from the machine holding
// the connection, never with ones an off-path host makes up. ok is false
// when the kernel cannot say.
func tcpProgress(c net.Conn) (n uint64, ok bool) {
	sc, isSC := c.(syscall.Conn)
	if !isSC {
		return 0, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	cerr := rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if cerr != nil || err != nil || info == nil {
		return 0, false
	}
	return info.Bytes_acked + info.Bytes_received, true
}
