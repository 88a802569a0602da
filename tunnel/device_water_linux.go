package tunnel

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/songgao/water"
	"github.com/vishvananda/netlink"
)

// waterDevice adapts github.com/songgao/water to the batch API: one packet
// per Read, a loop per Write, no offloads.
type waterDevice struct {
	ifce      *water.Interface
	name      string
	mtu       int
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

func openWater(name string, mtu int) (Device, error) {
	ifce, err := water.New(water.Config{
		DeviceType:             water.TUN,
		PlatformSpecificParams: water.PlatformSpecificParams{Name: name},
	})
	if err != nil {
		return nil, err
	}
	link, err := netlink.LinkByName(ifce.Name())
	if err == nil {
		err = netlink.LinkSetMTU(link, mtu)
	}
	if err != nil {
		ifce.Close()
		return nil, fmt.Errorf("set MTU %d: %w", mtu, err)
	}
	return &waterDevice{ifce: ifce, name: ifce.Name(), mtu: mtu}, nil
}

func (d *waterDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 || len(sizes) == 0 || offset < 0 || offset >= len(bufs[0]) {
		return 0, fmt.Errorf("read %s: no room in batch", d.name)
	}
	n, err := d.ifce.Read(bufs[0][offset:])
	if err != nil {
		return 0, closedErr("read "+d.name, err, d.closed.Load())
	}
	sizes[0] = n
	return 1, nil
}

func (d *waterDevice) Write(bufs [][]byte, offset int) (int, error) {
	var errs error
	for _, b := range bufs {
		if _, err := d.ifce.Write(b[offset:]); err != nil {
			if d.closed.Load() || errors.Is(err, os.ErrClosed) {
				return 0, closedErr("write "+d.name, err, true)
			}
			// One bad packet must not lose the rest of the batch.
			errs = errors.Join(errs, err)
		}
	}
	if errs != nil {
		return 0, fmt.Errorf("write %s: %w", d.name, errs)
	}
	return len(bufs), nil
}

func (d *waterDevice) BatchSize() int { return 1 }
func (d *waterDevice) Name() string   { return d.name }
func (d *waterDevice) MTU() int {
	if l, err := netlink.LinkByName(d.name); err == nil && l.Attrs().MTU > 0 {
		return l.Attrs().MTU
	}
	return d.mtu
}

func (d *waterDevice) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		if err := d.ifce.Close(); err != nil {
			d.closeErr = fmt.Errorf("close %s: %w", d.name, err)
		}
	})
	return d.closeErr
}
