/* Devices: the TUN end of the data plane.
 *
 * Outbound (TUN -> TLS), one goroutine per session direction:
 *
 *   1. Device.Read fills a Batch: up to BatchSize() packets, each at offset
 *      Headroom in its own pooled buffer (the wireguard driver may split one
 *      TCP super-packet read from the kernel into many).
 *   2. The caller filters the packets in place (policy, anti-spoofing).
 *   3. Writer.WriteBatch frames them into one buffered TLS write.
 *
 * Inbound (TLS -> TUN):
 *
 *   1. Reader.ReadBatch copies every data frame already buffered into a
 *      Batch at offset Headroom.
 *   2. The caller filters in place and compacts the batch.
 *   3. One Device.Write of the batch; the wireguard driver coalesces TCP/UDP
 *      segments (GRO) into super-packets and writes the virtio-net header into
 *      the headroom in front of them, so Write mutates bufs.
 *
 * Both drivers present this batch API; "water" has BatchSize 1 and loops.
 */

package tunnel

import (
	"errors"
	"fmt"
	"os"
)

// Device is a TUN interface with a batch API (the shape of
// golang.zx2c4.com/wireguard/tun.Device).
type Device interface {
	// Read reads up to len(bufs) packets, packet i into bufs[i][offset:],
	// its length into sizes[i], and returns how many it read. Use
	// offset = Headroom and len(bufs) >= BatchSize().
	Read(bufs [][]byte, sizes []int, offset int) (int, error)
	// Write writes every bufs[i][offset:] as one packet and returns
	// len(bufs) on success. It may modify bufs, including the bytes before
	// offset (GRO coalescing, virtio-net header); offset must be >= 10 for
	// the wireguard driver on Linux (Headroom is).
	Write(bufs [][]byte, offset int) (int, error)
	// BatchSize is the most packets one Read returns; size batches by it.
	BatchSize() int
	// Name is the interface name.
	Name() string
	// MTU is the interface MTU.
	MTU() int
	// Close destroys the interface. It is idempotent and makes a blocked
	// Read return an error wrapping os.ErrClosed.
	Close() error
}

// Device drivers for OpenDevice.
const (
	DriverWireguard = "wireguard"
	DriverWater     = "water"
)

// ErrDeviceClosed is wrapped by Read and Write errors after Close.
var ErrDeviceClosed = os.ErrClosed

// OpenDevice creates the TUN interface name with the given MTU using driver
// ("wireguard", the default when empty, or "water"). The link is left down;
// see LinkUp.
func OpenDevice(name, driver string, mtu int) (Device, error) {
	if name == "" || len(name) > 15 {
		return nil, fmt.Errorf("open TUN %q: name must be 1..15 bytes", name)
	}
	if mtu < MinMTU || mtu > MaxMTU {
		return nil, fmt.Errorf("open TUN %s: MTU %d out of range %d..%d", name, mtu, MinMTU, MaxMTU)
	}
	var (
		d   Device
		err error
	)
	switch driver {
	case "", DriverWireguard:
		d, err = openWireguard(name, mtu)
	case DriverWater:
		d, err = openWater(name, mtu)
	default:
		return nil, fmt.Errorf("open TUN %s: unknown driver %q (want %q or %q)", name, driver, DriverWireguard, DriverWater)
	}
	if err != nil {
		if driver == "" {
			driver = DriverWireguard
		}
		return nil, fmt.Errorf("open TUN %s (driver %s): %w", name, driver, err)
	}
	return d, nil
}

// closedErr maps the various "file closed" errors of the drivers to one
// that wraps os.ErrClosed.
func closedErr(op string, err error, closed bool) error {
	if closed || errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("%s: %w", op, os.ErrClosed)
	}
	return fmt.Errorf("%s: %w", op, err)
}
