package tunnel

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/tun"
)

// wgDevice adapts golang.zx2c4.com/wireguard/tun: batched reads/writes and,
// on Linux, TSO/GRO offloads through a virtio-net header.
type wgDevice struct {
	dev       tun.Device
	name      string
	mtu       int
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	drained   chan struct{} // closed when the event drain goroutine ends
}

func openWireguard(name string, mtu int) (Device, error) {
	dev, err := tun.CreateTUN(name, mtu)
	if err != nil {
		return nil, err
	}
	real, err := dev.Name()
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("read device name: %w", err)
	}
	d := &wgDevice{dev: dev, name: real, mtu: mtu, drained: make(chan struct{})}
	// The driver's listener blocks once its small event channel is full, so
	// someone must drain it. This goroutine ends when Close closes the
	// channel.
	go func() {
		defer close(d.drained)
		for range dev.Events() {
		}
	}()
	return d, nil
}

func (d *wgDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	n, err := d.dev.Read(bufs, sizes, offset)
	if err != nil {
		if n > 0 || errors.Is(err, tun.ErrTooManySegments) {
			// Packets first; a persistent error repeats on the next call.
			// Too many segments is transient: the rest were dropped.
			return n, nil
		}
		return 0, closedErr("read "+d.name, err, d.closed.Load())
	}
	return n, nil
}

func (d *wgDevice) Write(bufs [][]byte, offset int) (int, error) {
	if _, err := d.dev.Write(bufs, offset); err != nil {
		return 0, closedErr("write "+d.name, err, d.closed.Load())
	}
	// The driver returns bytes (not packets) written; report packets.
	return len(bufs), nil
}

func (d *wgDevice) BatchSize() int { return d.dev.BatchSize() }
func (d *wgDevice) Name() string   { return d.name }

func (d *wgDevice) MTU() int {
	if m, err := d.dev.MTU(); err == nil && m > 0 {
		return m
	}
	return d.mtu
}

func (d *wgDevice) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		if err := d.dev.Close(); err != nil {
			d.closeErr = fmt.Errorf("close %s: %w", d.name, err)
		}
		select {
		case <-d.drained:
		case <-time.After(5 * time.Second):
			// The driver's listeners did not stop; do not hang shutdown.
		}
	})
	return d.closeErr
}
