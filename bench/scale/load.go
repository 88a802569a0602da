package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// Bounds of the load phases.
const (
	maxConcurrency  = 1024
	connectAttempts = 5 // per device per phase (ramp, cycles)
	stormAttempts   = 10
	maxBackoff      = 2 * time.Second
	rssPoll         = 500 * time.Millisecond
	disconnectConc  = 64
)

type loadOpts struct {
	gateway, bare, serverName, dir, prefix, caFile string
	devices, conc, storm, cycles, churn            int
	idle, settle, timeout, renewWindow             time.Duration
	gwPID, barePID, clkTck                         int
	maxRSS                                         uint64
	locals                                         []netip.Addr
}

func parseLoad(args []string) (*loadOpts, error) {
	fs := flag.NewFlagSet("scale load", flag.ContinueOnError)
	o := &loadOpts{}
	fs.StringVar(&o.gateway, "gateway", "", "gateway address HOST:PORT (required)")
	fs.StringVar(&o.bare, "bare", "", "bare TLS server address HOST:PORT (required)")
	fs.StringVar(&o.serverName, "server-name", "", "name in the gateway certificate (required)")
	fs.StringVar(&o.dir, "dir", "", "PKI directory with devices/ (required)")
	fs.StringVar(&o.caFile, "ca", "", "CA bundle to verify the servers (default DIR/ca.crt)")
	fs.StringVar(&o.prefix, "prefix", "scale-", "device name prefix")
	fs.IntVar(&o.devices, "devices", 0, "sessions to hold (devices issued by `scale issue`) (required)")
	fs.IntVar(&o.gwPID, "gateway-pid", 0, "pid of the gateway process, for RSS and CPU (required)")
	fs.IntVar(&o.barePID, "bare-pid", 0, "pid of the bare server, for its CPU per session (optional)")
	fs.IntVar(&o.conc, "concurrency", 16, "handshakes in flight during ramp, cycles and churn")
	fs.IntVar(&o.storm, "storm", 2000, "sessions that drop and reconnect at once (0: skip)")
	fs.IntVar(&o.cycles, "cycles", 4, "full reconnect cycles of every device")
	fs.IntVar(&o.churn, "churn", 2000, "connect+close operations per server in the churn comparison (0: skip)")
	fs.DurationVar(&o.idle, "idle", 60*time.Second, "how long to measure gateway CPU with every session idle")
	fs.DurationVar(&o.renewWindow, "renew-window", 60*time.Second, "renewal storm: every held session renews its certificate, spread over this window (0: all at once; negative: skip)")
	fs.DurationVar(&o.settle, "settle", 5*time.Second, "pause before each RSS reading")
	fs.DurationVar(&o.timeout, "timeout", 9*time.Minute, "bound on the whole run")
	fs.IntVar(&o.clkTck, "clk-tck", 100, "clock ticks per second of /proc/PID/stat (getconf CLK_TCK)")
	maxRSS := fs.Uint64("max-rss-mb", 14000, "stop the run when the gateway's RSS passes this many MiB")
	locals := fs.String("source-addrs", "", "comma-separated local addresses to dial from, in turn")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.gateway == "" || o.bare == "" || o.serverName == "" || o.dir == "" || o.devices <= 0 || o.gwPID <= 0 {
		return nil, errors.New("--gateway, --bare, --server-name, --dir, --devices and --gateway-pid are required")
	}
	switch {
	case o.devices > maxDevices:
		return nil, fmt.Errorf("--devices %d: at most %d", o.devices, maxDevices)
	case o.conc < 1 || o.conc > maxConcurrency:
		return nil, fmt.Errorf("--concurrency %d: want 1..%d", o.conc, maxConcurrency)
	case o.storm < 0 || o.cycles < 0 || o.cycles > 100 || o.churn < 0 || o.churn > 10*maxDevices:
		return nil, errors.New("--storm, --cycles (<= 100) and --churn must be small non-negative numbers")
	case o.clkTck <= 0:
		return nil, errors.New("--clk-tck must be positive")
	case o.renewWindow > 30*time.Minute:
		return nil, errors.New("--renew-window: at most 30m")
	case o.timeout <= 0 || o.idle < 0 || o.settle < 0:
		return nil, errors.New("--timeout must be positive, --idle and --settle not negative")
	}
	o.maxRSS = *maxRSS << 20
	if o.caFile == "" {
		o.caFile = o.dir + "/ca.crt"
	}
	var err error
	if o.locals, err = parseAddrs(*locals); err != nil {
		return nil, fmt.Errorf("--source-addrs: %w", err)
	}
	return o, nil
}

// parseAddrs parses a comma-separated list of IP addresses (empty: none).
func parseAddrs(list string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// fleet is the set of simulated devices and their live sessions.
type fleet struct {
	d    *dialer
	devs []*device

	mu   sync.Mutex
	live []*session     // by device index; nil when not connected
	lost map[string]int // sessions that ended without Close, by reason
	errs map[string]int // failed connects, by error class
}

func newFleet(d *dialer, devs []*device) *fleet {
	return &fleet{d: d, devs: devs, live: make([]*session, len(devs)), lost: map[string]int{}, errs: map[string]int{}}
}

// connect brings device i up, retrying with backoff up to attempts times.
// It returns the number of retries.
func (f *fleet) connect(ctx context.Context, i, attempts int) (int, error) {
	var err error
	for a := range attempts {
		if a > 0 {
			if werr := sleepCtx(ctx, backoff(a)); werr != nil {
				return a, werr
			}
		}
		var s *session
		if s, err = f.d.connect(ctx, f.devs[i]); err == nil {
			f.mu.Lock()
			f.live[i] = s
			f.mu.Unlock()
			s.start(func(s *session) { f.ended(i, s) })
			return a, nil
		}
		if ctx.Err() != nil {
			return a, ctx.Err()
		}
		f.mu.Lock()
		f.errs[errorClass(err)]++
		f.mu.Unlock()
	}
	return attempts - 1, err
}

// ended records a session that ended without Close.
func (f *fleet) ended(i int, s *session) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.live[i] == s {
		f.live[i] = nil
	}
	f.lost[s.reason]++
}

// disconnect closes device i's session, if any.
func (f *fleet) disconnect(i int, graceful bool) {
	f.mu.Lock()
	s := f.live[i]
	f.live[i] = nil
	f.mu.Unlock()
	if s != nil {
		s.Close(graceful)
	}
}

func (f *fleet) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, s := range f.live {
		if s != nil {
			n++
		}
	}
	return n
}

func (f *fleet) liveIndices(max int) []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for i, s := range f.live {
		if s != nil && len(out) < max {
			out = append(out, i)
		}
	}
	return out
}

// backoff is the pause before retry a (1-based): 100 ms doubling, at most
// maxBackoff, with up to 50% jitter so retries do not march in step.
func backoff(a int) time.Duration {
	d := 100 * time.Millisecond << min(a-1, 5)
	d = min(d, maxBackoff)
	return d/2 + rand.N(d/2+1)
}

// errorClass shortens a connect error for the tally.
func errorClass(err error) string {
	var re *refusedError
	var s string
	switch {
	case errors.As(err, &re):
		return "refused " + re.reason
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	default:
		s = err.Error()
	}
	for _, k := range []string{"connection refused", "connection reset", "i/o timeout", "EOF", "cannot assign requested address", "too many open files", "bad certificate", "broken pipe"} {
		if strings.Contains(s, k) {
			return k
		}
	}
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// forEach calls fn(i) for i in [0, n) on conc workers, stopping early when
// ctx ends.
func forEach(ctx context.Context, n, conc int, fn func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		})
	}
	wg.Wait()
}

// watchRSS samples the gateway's RSS until ctx ends, keeping the peak, and
// cancels the run when it passes limit or the gateway is gone.
func watchRSS(ctx context.Context, cancel context.CancelCauseFunc, pid int, limit uint64, peak *atomic.Uint64) {
	t := time.NewTicker(rssPoll)
	defer t.Stop()
	for {
		rss, err := procRSS(pid)
		if err != nil {
			cancel(fmt.Errorf("gateway (pid %d) is gone: %w", pid, err))
			return
		}
		if rss > peak.Load() {
			peak.Store(rss)
		}
		if rss > limit {
			cancel(fmt.Errorf("gateway RSS %s passed --max-rss-mb %d", mib(rss), limit>>20))
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseLoad(args)
	if err != nil {
		return err
	}
	if lim := fdLimit(); lim != 0 && lim < uint64(o.devices+o.conc+256) {
		return fmt.Errorf("RLIMIT_NOFILE is %d; %d sessions need more (ulimit -n)", lim, o.devices)
	}
	progress := func(format string, args ...any) {
		fmt.Fprintf(stderr, "scale: "+format+"\n", args...)
	}
	devs, err := loadDevices(o.dir, o.prefix, o.devices)
	if err != nil {
		return err
	}
	gw, err := newDialer(o.gateway, o.serverName, o.caFile, o.locals)
	if err != nil {
		return err
	}
	bare, err := newDialer(o.bare, o.serverName, o.caFile, o.locals)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeoutCause(ctx, o.timeout, fmt.Errorf("--timeout %v reached", o.timeout))
	defer cancel()
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	var peak atomic.Uint64
	var wg sync.WaitGroup
	defer wg.Wait()
	defer abort(nil) // runs before wg.Wait: stops the watcher
	wg.Go(func() { watchRSS(ctx, abort, o.gwPID, o.maxRSS, &peak) })

	r := &results{Devices: o.devices, CPUs: runtime.NumCPU(), Storm: o.storm, ChurnOps: o.churn}
	f := newFleet(gw, devs)
	defer func() { // whatever happened, leave no session behind
		forEach(context.Background(), len(devs), disconnectConc, func(i int) { f.disconnect(i, true) })
	}()
	err = phases(ctx, o, f, bare, r, progress)
	r.PeakRSS = peak.Load()
	f.mu.Lock()
	r.Lost, r.Errors = f.lost, f.errs
	f.mu.Unlock()
	if err != nil {
		if c := context.Cause(ctx); c != nil {
			err = c
		}
		r.Aborted = err.Error()
	}
	fmt.Fprint(stdout, r.format())
	if err != nil {
		return err
	}
	return nil
}

func phases(ctx context.Context, o *loadOpts, f *fleet, bare *dialer, r *results, progress func(string, ...any)) error {
	n := len(f.devs)
	rss := func() (uint64, error) {
		if err := sleepCtx(ctx, o.settle); err != nil {
			return 0, err
		}
		return procRSS(o.gwPID)
	}
	var err error
	if r.BaselineRSS, err = procRSS(o.gwPID); err != nil {
		return err
	}
	progress("gateway baseline RSS %s; ramping up %d sessions, %d handshakes in flight", mib(r.BaselineRSS), n, o.conc)

	t := time.Now()
	c0, err := procCPUTicks(o.gwPID)
	if err != nil {
		return err
	}
	forEach(ctx, n, o.conc, func(i int) { _, _ = f.connect(ctx, i, connectAttempts) })
	r.RampSeconds = time.Since(t).Seconds()
	if c1, err := procCPUTicks(o.gwPID); err == nil {
		r.RampCPUSeconds = float64(c1-c0) / float64(o.clkTck)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if r.HeldRSS, err = rss(); err != nil {
		return err
	}
	r.Held = f.count()
	progress("%d sessions up in %.1f s; gateway RSS %s", r.Held, r.RampSeconds, mib(r.HeldRSS))

	if o.idle > 0 {
		c0, err := procCPUTicks(o.gwPID)
		if err != nil {
			return err
		}
		if err := sleepCtx(ctx, o.idle); err != nil {
			return err
		}
		c1, err := procCPUTicks(o.gwPID)
		if err != nil {
			return err
		}
		r.IdleSeconds = o.idle.Seconds()
		r.IdleCPUSeconds = float64(c1-c0) / float64(o.clkTck)
		r.HeldAfterIdle = f.count()
		progress("idle %v: gateway used %.2f CPU s; %d sessions still up", o.idle, r.IdleCPUSeconds, r.HeldAfterIdle)
	}

	if o.renewWindow >= 0 {
		if err := renewPhase(ctx, o, f, r, progress); err != nil {
			return err
		}
	}

	if o.storm > 0 {
		idx := f.liveIndices(o.storm)
		r.Storm = len(idx)
		var wg sync.WaitGroup
		for _, i := range idx {
			wg.Go(func() { f.disconnect(i, false) })
		}
		wg.Wait()
		var retries, failed atomic.Int64
		t := time.Now()
		for _, i := range idx {
			wg.Go(func() {
				n, err := f.connect(ctx, i, stormAttempts)
				retries.Add(int64(n))
				if err != nil {
					failed.Add(1)
				}
			})
		}
		wg.Wait()
		r.StormSeconds = time.Since(t).Seconds()
		r.StormRetries, r.StormFailed = int(retries.Load()), int(failed.Load())
		if ctx.Err() != nil {
			return ctx.Err()
		}
		progress("storm: %d sessions dropped and back in %.1f s (%d retries, %d failed)", r.Storm, r.StormSeconds, r.StormRetries, r.StormFailed)
	}

	for c := range o.cycles {
		t := time.Now()
		forEach(ctx, n, o.conc, func(i int) {
			f.disconnect(i, true)
			_, _ = f.connect(ctx, i, connectAttempts)
		})
		el := time.Since(t).Seconds()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		m, err := rss()
		if err != nil {
			return err
		}
		r.CycleRates = append(r.CycleRates, float64(n)/el)
		r.CycleRSS = append(r.CycleRSS, m)
		r.HeldAfterCycles = f.count()
		progress("reconnect cycle %d: %d devices in %.1f s; gateway RSS %s with %d sessions", c+1, n, el, mib(m), r.HeldAfterCycles)
	}

	forEach(ctx, n, disconnectConc, func(i int) { f.disconnect(i, true) })
	if r.ClosedRSS, err = rss(); err != nil {
		return err
	}
	progress("all sessions closed; gateway RSS %s", mib(r.ClosedRSS))

	if o.churn > 0 {
		// Alternate rounds so drift on a shared machine hits both alike.
		half := []int{o.churn / 2, o.churn - o.churn/2}
		var bareOK, gwOK int
		var bareT, gwT float64
		var bareCPU, gwCPU uint64
		cpuOK := o.barePID > 0
		for round := range 2 {
			for _, target := range []*dialer{bare, f.d} {
				pid := o.gwPID
				if target == bare {
					pid = o.barePID
				}
				c0, err0 := procCPUTicks(pid)
				ok, el := churn(ctx, target, f.devs, half[round], o.conc)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				c1, err1 := procCPUTicks(pid)
				cpuOK = cpuOK && err0 == nil && err1 == nil
				if target == bare {
					bareOK, bareT, bareCPU = bareOK+ok, bareT+el, bareCPU+c1-c0
				} else {
					gwOK, gwT, gwCPU = gwOK+ok, gwT+el, gwCPU+c1-c0
				}
			}
		}
		r.BareRate, r.GatewayRate = float64(bareOK)/bareT, float64(gwOK)/gwT
		if cpuOK && bareOK > 0 && gwOK > 0 {
			r.BareCPUms = float64(bareCPU) / float64(o.clkTck) * 1000 / float64(bareOK)
			r.GatewayCPUms = float64(gwCPU) / float64(o.clkTck) * 1000 / float64(gwOK)
		}
		r.ChurnFailed = 2*o.churn - bareOK - gwOK
		progress("churn: gateway %.0f new sessions/s, bare TLS %.0f/s", r.GatewayRate, r.BareRate)
	}
	return nil
}

// renewPhase runs the renewal storm over the held sessions and records
// its figures; a gateway that does not offer renewal is noted, not an
// error.
func renewPhase(ctx context.Context, o *loadOpts, f *fleet, r *results, progress func(string, ...any)) error {
	held := f.count()
	f.mu.Lock()
	lostBefore := 0
	for _, n := range f.lost {
		lostBefore += n
	}
	f.mu.Unlock()
	progress("renewal storm: every held session renews, spread over %v", o.renewWindow)
	c0, err := procCPUTicks(o.gwPID)
	if err != nil {
		return err
	}
	st := renewStorm(ctx, f, o.renewWindow)
	c1, err := procCPUTicks(o.gwPID)
	if err != nil {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r.RenewWindow = o.renewWindow
	r.RenewOffered, r.Renewed, r.RenewFailed = st.offered, st.ok, st.reasons
	if st.offered == 0 {
		r.RenewNotOffered = true
		progress("renewal storm: the gateway offers no renewal ([renewal] not configured); skipped")
		return nil
	}
	r.RenewSeconds = st.last.Sub(st.first).Seconds()
	r.RenewP50, r.RenewP99, r.RenewMax = percentile(st.lat, 0.5), percentile(st.lat, 0.99), percentile(st.lat, 1)
	cpu := float64(c1-c0) / float64(o.clkTck)
	r.RenewCPUSeconds = cpu
	if r.IdleSeconds > 0 { // less what the same sessions cost idle over the storm
		cpu -= r.IdleCPUSeconds / r.IdleSeconds * st.last.Sub(st.first).Seconds()
	}
	if st.ok > 0 {
		r.RenewCPUms = max(cpu, 0) * 1000 / float64(st.ok)
	}
	if err := sleepCtx(ctx, o.settle); err != nil {
		return err
	}
	f.mu.Lock()
	lostAfter := 0
	for _, n := range f.lost {
		lostAfter += n
	}
	f.mu.Unlock()
	r.RenewLost, r.HeldAfterRenew = lostAfter-lostBefore, f.count()
	progress("renewal storm: %d of %d renewed in %.1f s (p50 %v, p99 %v); %d sessions lost; gateway %.2f ms CPU per renewal",
		st.ok, held, r.RenewSeconds, r.RenewP50.Round(time.Millisecond), r.RenewP99.Round(time.Millisecond), r.RenewLost, r.RenewCPUms)
	return nil
}

// churn runs ops connect-then-close operations (device i%len(devs)) on
// conc workers and returns how many succeeded and the seconds it took.
func churn(ctx context.Context, d *dialer, devs []*device, ops, conc int) (int, float64) {
	var ok atomic.Int64
	t := time.Now()
	forEach(ctx, ops, conc, func(i int) {
		s, err := d.connect(ctx, devs[i%len(devs)])
		if err != nil {
			return
		}
		ok.Add(1)
		_ = s.tc.SetWriteDeadline(time.Now().Add(closeWrite))
		_ = s.w.WriteClose(string(tunnel.ReasonClientShutdown))
		s.closeNow()
	})
	return int(ok.Load()), time.Since(t).Seconds()
}
