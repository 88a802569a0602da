package main

// scale attack (`make attack`, scripts/attack.sh): can a stranger without
// a certificate keep a real laptop out? Silent connections (a TCP connect,
// then nothing) and dripping ones (a TLS record header, then one byte a
// second) are held against the gateway from the given source addresses,
// each re-opened as soon as the gateway closes it; meanwhile a valid
// device connects --trials times (TCP, TLS with its certificate, hello,
// config), retrying after a failed attempt like a laptop, and the time from
// its first attempt to its config is measured. Every loop is bounded by
// --timeout, the attackers' re-open rate by --reopen-pause.

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

type attackOpts struct {
	gateway, serverName, dir, caFile, device string
	laptop                                   netip.Addr   // the device's source address
	sources                                  []netip.Addr // the attackers'
	silent, drip, stall, trials              int
	warmup, retry, trialLimit, pause         time.Duration
	timeout                                  time.Duration
}

func parseAttack(args []string) (*attackOpts, error) {
	fs := flag.NewFlagSet("attack", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o := &attackOpts{}
	fs.StringVar(&o.gateway, "gateway", "", "gateway address HOST:PORT (required)")
	fs.StringVar(&o.serverName, "server-name", "", "name in the gateway certificate (required)")
	fs.StringVar(&o.dir, "dir", "", "PKI directory with devices/ (required)")
	fs.StringVar(&o.caFile, "ca", "", "CA bundle to verify the gateway (default DIR/ca.crt)")
	fs.StringVar(&o.device, "device", "scale-00000", "the valid device (devices/NAME.crt and .key)")
	laptop := fs.String("laptop-addr", "127.0.0.1", "source address of the valid device")
	sources := fs.String("attack-addrs", "", "comma-separated source addresses of the attackers, used in turn (empty: no attack)")
	fs.IntVar(&o.silent, "silent", 16, "silent connections held")
	fs.IntVar(&o.drip, "drip", 16, "dripping connections held (one byte a second)")
	fs.IntVar(&o.stall, "stall", 0, "stalled connections held (a whole ClientHello, then silence)")
	fs.IntVar(&o.trials, "trials", 5, "times the valid device connects")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "attack time before the first trial")
	fs.DurationVar(&o.retry, "retry", 500*time.Millisecond, "the device's wait after a failed attempt (a laptop's reconnect.min_delay)")
	fs.DurationVar(&o.trialLimit, "trial-limit", 20*time.Second, "give a trial up after this long")
	fs.DurationVar(&o.pause, "reopen-pause", 10*time.Millisecond, "an attacker's pause before re-opening a closed connection")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Minute, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.gateway == "" || o.serverName == "" || o.dir == "" {
		return nil, errors.New("--gateway, --server-name and --dir are required")
	}
	var err error
	if o.laptop, err = netip.ParseAddr(*laptop); err != nil {
		return nil, fmt.Errorf("--laptop-addr: %w", err)
	}
	if o.sources, err = parseAddrs(*sources); err != nil {
		return nil, fmt.Errorf("--attack-addrs: %w", err)
	}
	switch {
	case o.silent < 0 || o.drip < 0 || o.stall < 0 || o.silent+o.drip+o.stall > 4096:
		return nil, errors.New("--silent, --drip and --stall: 0..4096 together")
	case o.trials < 1 || o.trials > 100:
		return nil, errors.New("--trials: 1..100")
	case o.timeout <= 0 || o.trialLimit <= 0 || o.retry < 0 || o.warmup < 0 || o.pause < time.Millisecond:
		return nil, errors.New("--timeout and --trial-limit positive, --retry and --warmup not negative, --reopen-pause at least 1ms")
	}
	if o.caFile == "" {
		o.caFile = o.dir + "/ca.crt"
	}
	return o, nil
}

// attackStats counts what the attackers saw.
type attackStats struct {
	opened, closedByGateway atomic.Int64
}

// runAttack prints one line per trial and key=value lines for the script:
// connect_ms_{min,median,max}, attempts_max, failed_trials, attack_opened.
func runAttack(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseAttack(args)
	if err != nil {
		return err
	}
	devs, err := loadDeviceNamed(o.dir, o.device)
	if err != nil {
		return err
	}
	d, err := newDialer(o.gateway, o.serverName, o.caFile, []netip.Addr{o.laptop})
	if err != nil {
		return err
	}
	hello, err := clientHello(o.serverName)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	var st attackStats
	actx, stopAttack := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if len(o.sources) > 0 {
		for i := range o.silent + o.drip + o.stall {
			src := o.sources[i%len(o.sources)]
			var send func(c net.Conn, tick int)
			switch {
			case i >= o.silent+o.drip:
				send = stallSender(hello)
			case i >= o.silent:
				send = dripSender
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				attacker(actx, o, src, send, &st)
			}()
		}
		fmt.Fprintf(stderr, "attack: %d silent + %d dripping + %d stalled connections from %d address(es); device from %s\n",
			o.silent, o.drip, o.stall, len(o.sources), o.laptop)
		sleepCtx(ctx, o.warmup)
	}

	var times []time.Duration
	maxAttempts, failed := 0, 0
	for trial := 1; trial <= o.trials && ctx.Err() == nil; trial++ {
		took, attempts, err := timeConnect(ctx, d, devs, o)
		maxAttempts = max(maxAttempts, attempts)
		if err != nil {
			failed++
			fmt.Fprintf(stderr, "trial %d: not connected after %s and %d attempts: %v\n", trial, took.Round(time.Millisecond), attempts, err)
		} else {
			times = append(times, took)
			fmt.Fprintf(stderr, "trial %d: connected in %s (%d attempts)\n", trial, took.Round(time.Millisecond), attempts)
		}
		sleepCtx(ctx, 300*time.Millisecond) // the gateway settles the replaced session
	}
	stopAttack()
	wg.Wait()

	slices.Sort(times)
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/float64(time.Millisecond)) }
	if len(times) > 0 {
		fmt.Fprintf(stdout, "connect_ms_min=%s\nconnect_ms_median=%s\nconnect_ms_max=%s\n", ms(times[0]), ms(times[len(times)/2]), ms(times[len(times)-1]))
	} else {
		fmt.Fprintf(stdout, "connect_ms_min=-\nconnect_ms_median=-\nconnect_ms_max=-\n")
	}
	fmt.Fprintf(stdout, "trials=%d\nfailed_trials=%d\nattempts_max=%d\nattack_opened=%d\nattack_closed_by_gateway=%d\n",
		o.trials, failed, maxAttempts, st.opened.Load(), st.closedByGateway.Load())
	return nil
}

// timeConnect connects the device, retrying after o.retry, and returns the
// time from the first attempt to the config. The session is closed again.
func timeConnect(ctx context.Context, d *dialer, devs []*device, o *attackOpts) (time.Duration, int, error) {
	start := time.Now()
	limit, cancel := context.WithTimeout(ctx, o.trialLimit)
	defer cancel()
	var last error
	for attempts := 1; ; attempts++ {
		s, err := d.connect(limit, devs[0])
		if err == nil {
			took := time.Since(start)
			s.Close(true)
			return took, attempts, nil
		}
		last = err
		if limit.Err() != nil {
			return time.Since(start), attempts, last
		}
		sleepCtx(limit, o.retry)
	}
}

// attacker holds one connection from src at a time, re-opening it when the
// gateway closes it, until ctx ends. send (nil: a silent connection) is
// called at once and then every second with the tick count.
func attacker(ctx context.Context, o *attackOpts, src netip.Addr, send func(c net.Conn, tick int), st *attackStats) {
	nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := nd.DialContext(dctx, "tcp", o.gateway)
		cancel()
		if err == nil {
			st.opened.Add(1)
			if hold(ctx, c, send) {
				st.closedByGateway.Add(1)
			}
			c.Close()
		}
		sleepCtx(ctx, o.pause)
	}
}

// dripSender sends a TLS handshake record header and the start of a
// ClientHello, one byte a tick.
func dripSender(c net.Conn, tick int) {
	drip := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write(drip[tick%len(drip) : tick%len(drip)+1])
}

// stallSender sends a whole ClientHello at once and nothing after it: the
// gateway answers with its flight and waits for the client's certificate.
func stallSender(hello []byte) func(net.Conn, int) {
	return func(c net.Conn, tick int) {
		if tick == 0 {
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = c.Write(hello)
		}
	}
}

// clientHello is the first flight of a crypto/tls client for serverName
// (one TLS record holding a whole ClientHello), captured over a pipe.
func clientHello(serverName string) ([]byte, error) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		_ = tls.Client(a, &tls.Config{ServerName: serverName, InsecureSkipVerify: true, NextProtos: []string{tunnel.ALPN}}).Handshake()
	}()
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(b, hdr); err != nil {
		return nil, fmt.Errorf("capture a ClientHello: %w", err)
	}
	rec := make([]byte, 5+int(hdr[3])<<8|int(hdr[4]))
	copy(rec, hdr)
	if _, err := io.ReadFull(b, rec[5:]); err != nil {
		return nil, fmt.Errorf("capture a ClientHello: %w", err)
	}
	return rec, nil
}

// hold keeps c open until the gateway closes it (true) or ctx ends.
func hold(ctx context.Context, c net.Conn, send func(net.Conn, int)) bool {
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_, _ = io.Copy(io.Discard, c) // returns when the gateway closes (or we do)
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	n := 0
	step := func() {
		if send != nil {
			send(c, n)
		}
		n++
	}
	step()
	for {
		select {
		case <-closed:
			return true
		case <-ctx.Done():
			c.Close()
			<-closed
			return false
		case <-tick.C:
			step()
		}
	}
}

// loadDeviceNamed reads devices/NAME.{crt,key}.
func loadDeviceNamed(dir, name string) ([]*device, error) {
	crt := filepath.Join(dir, "devices", name+".crt")
	cert, err := tls.LoadX509KeyPair(crt, filepath.Join(dir, "devices", name+".key"))
	if err != nil {
		return nil, fmt.Errorf("device %s: %w", name, err)
	}
	return []*device{{name: name, cert: cert}}, nil
}
