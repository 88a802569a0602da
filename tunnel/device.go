/* Devices: the TUN end of the data plane.
 *
 * Outbound (TUN -> TLS), one loop per side whatever the driver:
 *
 *   1. A PacketSource (source.go) reads one packet per call at offset
 *      Headroom, its virtio-net header in front: ReadVnet on a TUN with
 *      offloads (a TCP super-packet whole), an adapter over Device.Read on
 *      one without (an all-zero header).
 *   2. The caller queues it in Lanes (lanes.go) for its writer goroutine.
 *   3. Round.Write (round.go) frames a round into one buffered TLS write,
 *      segmenting super-packets for a peer without gso.
 *
 * Inbound (TLS -> TUN):
 *
 *   1. Reader.ReadPackets copies every data frame already buffered into a
 *      Batch at offset Headroom.
 *   2. Inbound (inbound.go) decides each packet and compacts the batch,
 *      keeping order.
 *   3. WritePackets: one Device.Write per run of plain packets; the
 *      wireguard driver coalesces TCP/UDP segments (GRO) into super-packets
 *      and writes the virtio-net header into the headroom in front of them,
 *      so Write mutates bufs. Super-packets go whole through WriteVnet.
 *
 * Both drivers present this batch API; "water" has BatchSize 1 and loops.
 */

package tunnel

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
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
// ("wireguard", the default when empty, or "water"). A name with %d (such
// as "sp%d") asks the kernel for the first free number; errors then say
// "spN (first free)", never the template. The link is left down; see LinkUp.
func OpenDevice(name, driver string, mtu int) (Device, error) {
	if name == "" || len(name) > 15 {
		return nil, fmt.Errorf("open TUN %q: name must be 1..15 bytes", name)
	}
	shown := DisplayName(name)
	if mtu < MinMTU || mtu > MaxMTU {
		return nil, fmt.Errorf("open TUN %s: MTU %d out of range %d..%d", shown, mtu, MinMTU, MaxMTU)
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
		return nil, fmt.Errorf("open TUN %s: unknown driver %q (want %q or %q)", shown, driver, DriverWireguard, DriverWater)
	}
	if err != nil {
		if driver == "" {
			driver = DriverWireguard
		}
		what := name + " (driver " + driver + ")"
		if shown != name {
			what = strings.TrimSuffix(shown, ")") + ", driver " + driver + ")"
		}
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("open TUN %s: %w (needs root or CAP_NET_ADMIN, and read-write access to /dev/net/tun)", what, err)
		}
		if errors.Is(err, syscall.EBUSY) {
			// The kernel lets one process attach a TUN name (without
			// multi-queue from several): most often a second gateway or
			// client started by hand beside the service.
			return nil, fmt.Errorf("open TUN %s: %w (another process has %s open: is a sallyport already running on it? "+
				"sallyport server status or sallyport status says; else set another tunnel.device)", what, err, name)
		}
		return nil, fmt.Errorf("open TUN %s: %w", what, err)
	}
	return d, nil
}

// DisplayName is a TUN name as a message shows it: a kernel name template
// ("sp%d", the first free spN) becomes "spN (first free)", so no format
// verb ever reaches a user; any other name is returned as it is.
func DisplayName(name string) string {
	if before, after, ok := strings.Cut(name, "%d"); ok {
		return before + "N" + after + " (first free)"
	}
	return name
}

// closedErr maps the various "file closed" errors of the drivers to one
// that wraps os.ErrClosed.
func closedErr(op string, err error, closed bool) error {
	if closed || errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("%s: %w", op, os.ErrClosed)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// VnetDevice is a Device that can also move packets whole with their
// virtio-net header (the Linux wireguard driver): the GSO pass-through path.
// VnetCapable tells whether this device's TUN has offloads on.
type VnetDevice interface {
	Device
	VnetCapable() bool
	ReadVnet(buf []byte, offset int) (int, error)
	WriteVnet(buf []byte, offset int) error
}

// AsVnet returns dev as a VnetDevice when it can pass super-packets whole.
func AsVnet(dev Device) (VnetDevice, bool) {
	v, ok := dev.(VnetDevice)
	if !ok || !v.VnetCapable() {
		return nil, false
	}
	return v, true
}

// WritePackets writes the first n packets of b to dev in order: each run of
// plain packets with one Device.Write (trimmed, so GRO can coalesce them),
// each GSO packet (b.GSO[i]) whole through WriteVnet. dev must be a
// VnetDevice if b holds GSO packets. It returns the first error; the n
// buffers are restored (Batch.Restore) before it returns.
func WritePackets(dev Device, b *Batch, n, offset int) error {
	defer b.restore(n)
	var firstErr error
	note := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	start := 0
	flush := func(end int) {
		if end > start {
			run := b.Bufs[start:end]
			for i := range run {
				run[i] = run[i][:offset+b.Sizes[start+i]]
			}
			_, err := dev.Write(run, offset)
			note(err)
		}
	}
	for i := 0; i < n; i++ {
		if !b.GSO[i] {
			continue
		}
		flush(i)
		start = i + 1
		v, ok := dev.(VnetDevice)
		if !ok {
			note(fmt.Errorf("write %s: GSO packet on a device without virtio-net headers", dev.Name()))
			continue
		}
		note(v.WriteVnet(b.Bufs[i][:offset+b.Sizes[i]], offset))
	}
	flush(n)
	return firstErr
}
