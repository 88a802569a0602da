package tunnel

import "fmt"

// VnetCapable reports whether the TUN was opened with IFF_VNET_HDR and
// offloads, so ReadVnet and WriteVnet can move super-packets whole
// (wireguard/tun reports a batch size above 1 exactly then).
func (d *wgDevice) VnetCapable() bool { return d.dev.BatchSize() > 1 }

// ReadVnet reads one packet as the kernel hands it over, unsplit: its
// virtio-net header lands in buf[offset-VnetHdrLen:offset] and the packet
// (up to 64 KiB) at buf[offset:]. It returns the packet's length.
func (d *wgDevice) ReadVnet(buf []byte, offset int) (int, error) {
	if offset < VnetHdrLen {
		return 0, fmt.Errorf("read %s: offset %d leaves no room for the virtio-net header", d.name, offset)
	}
	n, err := d.dev.File().Read(buf[offset-VnetHdrLen:])
	if err != nil {
		return 0, closedErr("read "+d.name, err, d.closed.Load())
	}
	if n <= VnetHdrLen {
		return 0, fmt.Errorf("read %s: %d-byte read is shorter than a virtio-net header", d.name, n)
	}
	return n - VnetHdrLen, nil
}

// WriteVnet writes buf[offset-VnetHdrLen:] (header, then packet) as one
// packet; the kernel segments it or completes its checksum as the header
// says. Validate headers from the network with ValidateVnet first.
func (d *wgDevice) WriteVnet(buf []byte, offset int) error {
	if offset < VnetHdrLen {
		return fmt.Errorf("write %s: offset %d leaves no room for the virtio-net header", d.name, offset)
	}
	if _, err := d.dev.File().Write(buf[offset-VnetHdrLen:]); err != nil {
		return closedErr("write "+d.name, err, d.closed.Load())
	}
	return nil
}
