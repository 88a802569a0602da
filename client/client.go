// Package client is the laptop side of sallyport: it dials the gateway,
// verifies it against the configured CA only, applies the configuration the
// gateway pushes (address, MTU, routes, DNS) to a TUN device, relays packets,
// and reconnects with backoff when the gateway goes away. On exit it removes
// everything it set up.
package client

// The laptop data plane.
//
//   laptop -> gateway: routineReadTUN (one, lives as long as the client)
//     and routineSend (sendq.go), one loop for every TUN driver: one packet
//     per read through tunnel.PacketSource (a super-packet whole with
//     offloads), into a two-lane queue, never waiting for the network;
//     routineSend sends small packets first, then bulk, one TLS flush per
//     round, whole (FrameDataGSO) when the gateway negotiated CapGSO and cut
//     into segments otherwise (tunnel.Round). With no session packets are
//     dropped, so nothing queues up while reconnecting and nothing leaks
//     outside the tunnel: the TUN and its routes stay in place until the
//     client exits.
//
//   gateway -> laptop: readStream (one per session)
//     tunnel.Inbound, the receive side the gateway uses too:
//     Reader.ReadPackets decodes frames in place, gathering until the stream
//     has nothing buffered; AQM drops a bulk packet when the laptop falls
//     behind the stream; super-packets whose virtio-net header does not
//     describe them for the pushed MTU are dropped; the survivors keep their
//     order and go out with tunnel.WritePackets: plain runs with one
//     Device.Write (GRO), super-packets whole.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/sallyport/sallyport/internal/adminsock"
	"github.com/sallyport/sallyport/internal/procs"
	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/masque"
)

const streamBufSize = 256 << 10

// Client is one laptop connection manager. Create it with New, run it with
// Run.
type Client struct {
	// OnState, if set before Run, is told each time a session starts
	// (connected) or ends, with a one-line state for the service
	// manager's status line (sd_notify STATUS=).
	OnState func(connected bool, line string)

	cfg  *Config // restart-only keys as started; the live ones in c.inPlace and c.matp (reload.go)
	log  *slog.Logger
	matp atomic.Pointer[material] // the device's identity now (material(); renew.go and reload.go replace it)
	// prev is the pair a renewal replaced, until a session with the new
	// one succeeds (renew.go); nil otherwise.
	prev atomic.Pointer[material]
	// retry cuts a wait between connection attempts short: a reload that
	// changed what the next attempt uses (reload.go).
	retry chan struct{}

	sys     system // the laptop's network stack (system.go)
	dev     tunnel.Device
	net     *netState
	procs   *procs.Scaler        // GOMAXPROCS (tunnel.cpus)
	cur     atomic.Pointer[conn] // the live session, nil while reconnecting
	stop    context.CancelFunc
	wg      sync.WaitGroup
	started time.Time

	mu         sync.Mutex // guards the fields below (status)
	inPlace    liveConfig // the keys a reload changes in place (reload.go)
	trying     string     // the gateway dialled now, or last (noteTrying)
	server     string
	pushed     tunnel.Config
	since      time.Time
	connected  bool
	lastError  string
	refused    string    // code of the last refusal or close reason (refusal.go)
	message    string    // its sentence for the employee
	retryAt    time.Time // when the next attempt starts
	skip       string    // a gateway that drained us: dial it last next time (drain.go)
	renewing   bool      // this session renews its certificate (renew.go)
	renewDue   time.Time // when it renews next
	renewedAt  time.Time // the last renewal
	renewals   int       // renewals since start
	renewError string    // why the last renewal failed ("" after one succeeded)
	memo       *memory   // what was last written to the memory file (memory.go)
	path       string    // the path of the session: PathQUIC or PathTLS (quic.go)
	pathWhy    string    // why that path

	upgrade atomic.Pointer[quicPath] // a QUIC connection ready for the next session (routineRetryUDP)
	mtuCap  atomic.Int32             // largest IP packet a datagram carries now; 0 on the TLS stream

	bytesIn, bytesOut     atomic.Uint64
	packetsIn, packetsOut atomic.Uint64
	drops                 tunnel.DropCounts // by reason (tunnel.LaptopDrops)
	connects              atomic.Uint64     // sessions established (metrics.go)
}

// conn is one session with the gateway: on the TLS stream (tls, backlog,
// r) or on the datagram path (link, qc; quic.go).
type conn struct {
	tls      *tls.Conn
	backlog  *tunnel.Backlog
	w        tunnel.SessionWriter
	r        *tunnel.Reader
	link     *masque.Link
	qc       *quic.Conn
	hangup   func()                // closes the connection (the datagram path)
	closeErr atomic.Pointer[error] // why the session ended, when a side routine ended it
	lastRecv atomic.Int64
	silent   atomic.Bool // the gateway went silent, or stopped reading (a write stalled)
	v6       bool        // the gateway gave us an IPv6 address
	gso      bool        // both ends negotiated tunnel.CapGSO
	// renewed carries the gateway's answer to a renewal request to
	// routineRenew (renew.go); nil when renewal was not negotiated.
	renewed chan tunnel.RenewReply
}

// New loads the TLS material named by cfg.
func New(cfg *Config, log *slog.Logger) (*Client, error) {
	mat, err := cfg.loadMaterial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	fellBack := false
	if err := checkValidity(mat.leaf, cfg.certSource(), now); err != nil {
		// A renewed certificate that is not valid on this laptop's clock
		// (the issuer's expiry cut it short, the gateway's clock runs
		// ahead): the pair it replaced, kept for this, if that one is.
		prev := loadPrevious(cfg, mat)
		if prev == nil || checkValidity(prev.leaf, "", now) != nil {
			return nil, err
		}
		log.Warn("the profile's certificate is not valid now; using the pair its renewal replaced, kept in the state directory, until the next renewal",
			"err", err, "file", previousFile(cfg), "serial", pki.IdentityOf(prev.leaf).Serial, "not_after", prev.leaf.NotAfter.Format(time.RFC3339))
		mat, fellBack = prev, true
	}
	c := &Client{cfg: cfg, log: log.With("device", pki.IdentityOf(mat.leaf).Device), sys: osSystem{stateDir: cfg.stateDirectory()}, inPlace: liveOf(cfg, mat),
		retry: make(chan struct{}, 1)}
	c.matp.Store(mat)
	if prev := loadPrevious(cfg, mat); prev != nil && !fellBack {
		// Not when it is in use already: its file stays until a renewal
		// replaces the profile's certificate.
		c.prev.Store(prev)
	}
	c.log.Debug("device key", "kind", mat.keyKind, "where", mat.keyAt)
	if left := time.Until(mat.leaf.NotAfter); left < 14*24*time.Hour {
		c.log.Warn("device certificate expires soon; ask your admin for a new one", "not_after", mat.leaf.NotAfter.Format(time.RFC3339),
			"days_left", int(left.Hours()/24))
	}
	return c, nil
}

// checkValidity refuses a device certificate outside its validity at now,
// with its dates: the gateway would refuse it anyway (expired), and an
// employee should read why at once instead of a client that dials and
// waits. src names where the certificate came from.
func checkValidity(leaf *x509.Certificate, src string, now time.Time) error {
	const day = "2006-01-02 15:04 MST"
	valid := fmt.Sprintf("valid from %s to %s", leaf.NotBefore.UTC().Format(day), leaf.NotAfter.UTC().Format(day))
	switch {
	case now.After(leaf.NotAfter):
		ago := "today"
		if d := int(now.Sub(leaf.NotAfter).Hours() / 24); d == 1 {
			ago = "1 day ago"
		} else if d > 1 {
			ago = fmt.Sprintf("%d days ago", d)
		}
		if id := pki.IdentityOf(leaf); id.Renewed {
			// A certificate that renewed itself and still expired: the
			// laptop was away for longer than it lives.
			return fmt.Errorf("device certificate (%s) expired on %s, %s (%s): this laptop was offline for longer than its certificate lives (%s), so it could not renew it in time. "+
				"Ask your admin to re-enroll it; on the CA: sallyport pki revoke --device %s --reason superseded; sallyport pki issue --device %s ...; "+
				"sallyport pki bundle --device %s --server HOST:PORT -o %s.toml; then replace this profile with the new file",
				src, leaf.NotAfter.UTC().Format(day), ago, valid, humanLife(leaf.NotAfter.Sub(leaf.NotBefore)), id.Device, id.Device, id.Device, id.Device)
		}
		return fmt.Errorf("device certificate (%s) expired on %s, %s (%s): ask your admin for a new one",
			src, leaf.NotAfter.UTC().Format(day), ago, valid)
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("device certificate (%s) is not valid yet: %s, and this laptop's clock says %s; check the clock (timedatectl), or ask your admin",
			src, valid, now.UTC().Format(day))
	}
	return nil
}

// humanLife says a certificate lifetime in days, hours or minutes.
func humanLife(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d days", int(d.Hours()/24+0.5))
	case d >= 2*time.Hour:
		return fmt.Sprintf("%d hours", int(d.Hours()+0.5))
	}
	return fmt.Sprintf("%d minutes", int(d.Minutes()+0.5))
}

// Run brings the tunnel up and keeps it up until ctx is cancelled or `down`
// is requested, then removes the TUN device, routes, addresses and DNS
// settings it made. ready is called once the TUN device and the kill switch
// are in place, before the first session: a laptop that boots without the
// gateway is up (and blocking, if the kill switch is on) and keeps trying.
// OnState reports each session's start and end.
func (c *Client) Run(ctx context.Context, ready func()) error {
	ctx, c.stop = context.WithCancel(ctx)
	defer c.stop()
	defer func() {
		if m := c.material(); m.closer != nil {
			m.closer.Close() // the token's sessions; the TPM holds nothing
		}
	}()
	c.started = time.Now()
	// First the device lock: a second client with this device stops here,
	// told who has it. A lock that cannot be taken at all (a user who may
	// not write the runtime directory) is reported after the admin
	// socket, whose error says better what to do.
	lock, lockErr := c.lockDevice()
	var inUse *InUseError
	if errors.As(lockErr, &inUse) {
		return lockErr
	}
	if lockErr == nil {
		defer lock.Release()
	}
	// One tunnel is one pipeline: a single P avoids cross-thread wake-ups
	// on every hand-off (internal/procs).
	c.procs = procs.New(c.cfg.Tunnel.CPUs)
	admin, err := adminsock.ListenOptions(c.cfg.Admin.Socket, adminsock.Options{Group: c.cfg.Admin.Group, ReadOnly: []string{"status"}},
		c.handleAdmin, c.log)
	if err != nil {
		return err
	}
	defer admin.Close()
	if lockErr != nil {
		return lockErr
	}
	if c.cfg.Metrics.Listen != "" {
		ms, err := listenMetrics(c)
		if err != nil {
			return err
		}
		defer ms.Close()
	}

	dev, err := c.sys.OpenDevice(c.cfg.Tunnel.Device, c.cfg.Tunnel.Driver, 1500)
	if err != nil {
		return err // tunnel.OpenDevice names the device and driver
	}
	c.dev = dev
	servers := c.servers()
	var prev string
	if c.cfg.Tunnel.Device == AutoDevice {
		// A run of this profile that crashed on another spN (the kernel
		// gave it sp1 then, sp0 now) left its DNS, kill switch and table
		// in place, which the device we got knows nothing of: undo the
		// DNS here, the rest in start (takeOver), unless a running client
		// holds that device now.
		if p := readDeviceRecord(c.cfg); p != "" && p != dev.Name() && !linkExists(p) {
			prev = p
			if n, err := c.sys.RecoverDNS(prev); err != nil {
				c.log.Warn("cannot restore the DNS a crashed run left", "device", prev, "err", err)
			} else if n > 0 {
				c.log.Info("restored the DNS a crashed run of this profile left", "device", prev)
			}
		}
	}
	c.mu.Lock() // Status reads c.net
	table := c.cfg.Tunnel.Table
	if c.cfg.Tunnel.tableAuto {
		table = TableFor(dev.Name()) // two profiles (sp0, sp1) never share a table
	}
	c.net = &netState{sys: c.sys, dev: dev.Name(), log: c.log, table: table,
		local: c.cfg.Tunnel.KillSwitch, allowLAN: c.cfg.Tunnel.AllowLAN, servers: servers, prev: prev}
	if prev != "" && c.cfg.Tunnel.tableAuto {
		c.net.prevTable = TableFor(prev)
	}
	c.mu.Unlock()
	recorded := false
	defer func() {
		c.net.teardown()
		dev.Close()
		c.wg.Wait()
		if recorded {
			removeDeviceRecord(c.cfg) // last: a stop cut short still leaves it for `down`
		}
		c.log.Info("tunnel down; routes, rules, kill switch, addresses and TUN removed")
	}()
	if err := c.net.start(c.boot()); err != nil {
		return err
	}
	if c.cfg.Tunnel.Device == AutoDevice {
		// Which spN this profile got, for `down` (and the next up) after
		// a crash; written once start has taken over what the record
		// named before.
		if err := writeDeviceRecord(c.cfg, dev.Name()); err != nil {
			c.log.Warn("cannot record the device; down after a crash will not find it", "err", err)
		}
		recorded = true
	}
	if ready != nil {
		ready()
	}
	c.state(false, "not connected: connecting to "+strings.Join(servers, ", "))
	c.wg.Add(1)
	go c.routineReadTUN()

	backoff := c.reconnect().MinDelay
	for ctx.Err() == nil {
		err := c.session(ctx, func() {
			backoff = c.reconnect().MinDelay
			select {
			case <-c.retry: // a reload's early try is done: it connected
			default:
			}
			c.mu.Lock()
			line := "connected to " + c.server + ", address " + c.pushed.Address.String()
			c.mu.Unlock()
			c.state(true, line)
		})
		if ctx.Err() != nil {
			break
		}
		// Exponential backoff with full jitter in [backoff/2, backoff]; a
		// refusal that needs an admin waits refused_delay (less up to 10%).
		r := classify(err)
		wait := backoff/2 + rand.N(backoff/2+1)
		if prev := c.prev.Load(); prev != nil && certRefused(err) && time.Now().Before(prev.leaf.NotAfter) {
			// The renewed certificate was refused: the pair it replaced,
			// kept for this, is tried at once.
			c.log.Warn("the renewed certificate was refused; trying the previous one", "reason", r.Code, "serial", pki.IdentityOf(prev.leaf).Serial)
			c.matp.Store(prev)
			c.prev.Store(nil)
			r.Permanent, wait = false, 0
		}
		if r.Permanent {
			d := c.reconnect().RefusedDelay
			wait = d - rand.N(d/10+1)
		}
		if errors.Is(err, errUpgrade) || errors.Is(err, errReload) {
			wait = 0 // the datagram path is ready (quic.go); a reload's reconnect
		}
		if r.Code == codeDrain {
			// The gateway asked us to move: the next one, now (drain.go).
			c.mu.Lock()
			c.skip = c.server
			c.mu.Unlock()
			wait = 0
		}
		c.mu.Lock()
		c.connected = false
		if err != nil {
			c.lastError = err.Error()
		}
		c.refused, c.message, c.retryAt = r.Code, r.Message, time.Now().Add(wait)
		c.mu.Unlock()
		why := r.Message
		if why == "" && err != nil {
			why = err.Error()
		}
		c.state(false, "not connected: "+why+"; next try at "+time.Now().Add(wait).Format("15:04:05"))
		retry := wait.Round(time.Millisecond).String()
		switch {
		case errors.Is(err, errReload):
			// Reload logged it ("reconnecting to apply the reload").
		case r.Permanent:
			c.log.Error(r.Message, "reason", r.Code, "err", err, "retry_in", retry)
		case r.Code != codeNetwork:
			c.log.Warn(r.Message, "reason", r.Code, "err", err, "retry_in", retry)
		default:
			c.log.Warn("disconnected from gateway; reconnecting", "err", err, "retry_in", retry)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-c.retry:
			backoff = c.reconnect().MinDelay / 2 // doubled below: the first delay again
		}
		t.Stop()
		backoff = min(2*backoff, c.reconnect().MaxDelay)
	}
	return nil
}

// lockDevice takes this device's lock on the laptop (devlock.go): a second
// client with the same device certificate stops here, before it dials.
func (c *Client) lockDevice() (*deviceLock, error) {
	id := pki.IdentityOf(c.material().leaf)
	owner := lockOwner{PID: os.Getpid(), Profile: profileName(c.cfg), Config: configPath(c.cfg), Device: id.Device, Since: c.started}
	return lockDevice(deviceLockFile(c.cfg.runtimeDirectory(), id), id.Device, owner)
}

// boot reads what the profile remembers of the gateway's last config
// (memory.go) for Run's start.
func (c *Client) boot() boot {
	b := boot{path: memoryFile(c.cfg)}
	b.mem, b.err = loadMemory(b.path, configPath(c.cfg))
	c.mu.Lock()
	c.memo = b.mem
	c.mu.Unlock()
	return b
}

// remember writes what pc says about failing closed to the profile's
// memory file, when it differs from what the file holds. A failure is
// logged: the session is up, only the next boot would not know.
func (c *Client) remember(pc tunnel.Config, server string) {
	m := memoryOf(pc, server, configPath(c.cfg), time.Now())
	c.mu.Lock()
	unchanged := c.memo != nil && c.memo.same(m)
	c.mu.Unlock()
	if unchanged {
		return
	}
	path := memoryFile(c.cfg)
	if err := saveMemory(path, m); err != nil {
		c.log.Warn("cannot remember the pushed config; the next up will not fail closed before its first connection", "err", err)
		return
	}
	c.mu.Lock()
	c.memo = &m
	c.mu.Unlock()
}

// state tells OnState, if set, whether a session is up, in one line.
func (c *Client) state(connected bool, line string) {
	if c.OnState != nil {
		c.OnState(connected, line)
	}
}

// material is the device's identity now.
func (c *Client) material() *material { return c.matp.Load() }

// Down asks a running Run to stop.
func (c *Client) Down() {
	if c.stop != nil {
		c.stop()
	}
}

// dial tries each configured gateway in order. The socket, and the DNS
// queries that resolve a gateway given by name, carry the client's fwmark:
// the policy routing rules (route.go) and the kill switch let exactly
// those out of the laptop outside the tunnel.
func (c *Client) dial(ctx context.Context, m *material) (*tls.Conn, string, error) {
	var errs []error
	mark := tunnel.MarkControl(uint32(c.net.table))
	resolver := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
		d := net.Dialer{Timeout: 5 * time.Second, Control: mark}
		return d.DialContext(ctx, network, address)
	}}
	for _, addr := range c.dialOrder() {
		c.noteTrying(addr)
		d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: -1, Control: mark, Resolver: resolver}
		raw, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		tunnel.TuneTCP(raw)
		tc := tls.Client(raw, c.tlsConfig(m))
		hctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		err = tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			raw.Close()
			errs = append(errs, fmt.Errorf("%s: TLS handshake: %w", addr, err))
			continue
		}
		if tc.ConnectionState().NegotiatedProtocol != tunnel.ALPN {
			tc.Close()
			errs = append(errs, fmt.Errorf("%s: gateway does not speak %s", addr, tunnel.ALPN))
			continue
		}
		return tc, addr, nil
	}
	return nil, "", errors.Join(errs...)
}

// tlsConfig trusts only the configured CA; crypto/tls checks the chain and
// the server name, verifyGateway the explicit serverAuth EKU, that the leaf
// is not a CA, and the optional pin.
func (c *Client) tlsConfig(m *material) *tls.Config {
	conf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    m.roots,
		ServerName: m.srvName,
		NextProtos: []string{tunnel.ALPN},
		// Always present the device certificate, even when the gateway's
		// list of accepted CAs does not name its issuer (crypto/tls would
		// otherwise send none): the gateway then logs who was refused and
		// why (unknown-ca, device=...), not an anonymous no-cert.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &m.cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error { return verifyGateway(cs, m.pin) },
	}
	tunnel.TLSDefaults(conf)
	return conf
}

// session runs one connection on the path open chose (quic.go): hello,
// config, relay until it fails.
func (c *Client) session(ctx context.Context, up func()) error {
	m := c.material()
	o, err := c.open(ctx, m)
	if err != nil {
		return err
	}
	if o.quic != nil {
		return c.sessionQUIC(ctx, o.quic, m, up)
	}
	return c.sessionTLS(ctx, o.tls.conn, o.tls.addr, m, up)
}

// sessionTLS runs one session on the TLS stream.
func (c *Client) sessionTLS(ctx context.Context, tc *tls.Conn, addr string, m *material, up func()) error {
	defer tc.Close()
	tw := tunnel.NewWriter(tc, streamBufSize)
	cn := &conn{tls: tc, backlog: tunnel.NewBacklog(tc.NetConn()), w: tw, r: tunnel.NewReader(tc, streamBufSize)}
	cn.hangup = func() { _ = tc.NetConn().Close() }
	// Shutdown (SIGTERM, `sallyport down`) tells the gateway and closes the
	// stream, which ends the blocked read below.
	stopClose := context.AfterFunc(ctx, func() { cn.hangUp(tunnel.ReasonClientShutdown) })
	defer stopClose()
	_ = tc.SetDeadline(time.Now().Add(15 * time.Second))
	caps := []string{tunnel.CapPush}
	if _, ok := tunnel.AsVnet(c.dev); ok {
		caps = append(caps, tunnel.CapGSO)
	}
	km, whyNot := keyMakerFor(c.cfg, m)
	if km != nil {
		caps = append(caps, tunnel.CapRenew)
	}
	if err := tw.WriteHello(tunnel.Hello{Version: tunnel.ProtocolVersion, Caps: caps, Software: "sallyport"}); err != nil {
		// A gateway that refused this device may have closed already; its
		// Close frame or TLS alert says why.
		if _, _, rerr := cn.r.Next(); rerr != nil && classify(rerr).Code != codeNetwork {
			return fmt.Errorf("%s: %w", addr, rerr)
		}
		return fmt.Errorf("%s: send hello: %w", addr, err)
	}
	typ, payload, err := cn.r.Next()
	if err != nil {
		return fmt.Errorf("%s: read config: %w", addr, err)
	}
	if typ == tunnel.FrameClose {
		return fmt.Errorf("%s: %w", addr, closeFrame(payload))
	}
	if typ != tunnel.FrameConfig {
		return fmt.Errorf("%s: first frame is type %#x, want config", addr, typ)
	}
	pc, err := tunnel.DecodeConfig(payload)
	if err != nil {
		return fmt.Errorf("%s: bad config from gateway: %w", addr, err)
	}
	_ = tc.SetDeadline(time.Time{})
	tw.SetTimeout(tc, pc.Timeout) // a gateway that stops reading ends the session
	c.mtuCap.Store(0)
	renew, err := c.live(cn, addr, pc, caps, m, km, whyNot, up)
	if err != nil {
		return err
	}
	defer c.cur.CompareAndSwap(cn, nil)

	// Keepalives and the silent-gateway timeout run beside the reader, and
	// after a fallback the retries of the datagram path (quic.go).
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { c.routineTimers(sctx, cn, pc) })
	if renew {
		wg.Go(func() { c.routineRenew(sctx, cn, pc.RenewAt, km) })
	}
	c.mu.Lock()
	fellBack := c.cfg.Transport.Mode == TransportAuto && c.path == PathTLS
	c.mu.Unlock()
	if fellBack {
		wg.Go(func() { c.routineRetryUDP(sctx, cn) })
	}
	err = c.readStream(cn)
	cancel()
	tc.Close()
	wg.Wait()
	if cn.silent.Load() {
		err = errGatewaySilent
	}
	if e := cn.failed(); e != nil {
		err = e
	}
	return fmt.Errorf("%s: %w", addr, err)
}

// live makes cn the session: the pushed config applied (the MTU capped by
// the datagram size on the datagram path), remembered, the state recorded
// and logged, up told. renew says whether this session renews the
// certificate (renew.go): the gateway offered it and km can make a key.
func (c *Client) live(cn *conn, addr string, pc tunnel.Config, caps []string, m *material, km KeyMaker, whyNot string, up func()) (renew bool, err error) {
	applied := pc
	applied.MTU = c.tunMTU(pc.MTU)
	if err := c.net.apply(applied); err != nil {
		return false, fmt.Errorf("apply pushed config: %w", err)
	}
	cn.v6 = v6In(pc)
	cn.gso = cn.tls != nil && tunnel.HasCap(pc.Caps, tunnel.CapGSO) && tunnel.HasCap(caps, tunnel.CapGSO)
	renew = km != nil && tunnel.HasCap(pc.Caps, tunnel.CapRenew) && pc.RenewAt > 0
	if renew {
		cn.renewed = make(chan tunnel.RenewReply, 1)
	}
	cn.lastRecv.Store(time.Now().UnixNano())
	c.remember(pc, addr)
	c.mu.Lock()
	c.server, c.pushed, c.since, c.connected, c.lastError = addr, pc, time.Now(), true, ""
	c.refused, c.message, c.retryAt = "", "", time.Time{}
	c.renewing = renew
	path, why := c.path, c.pathWhy
	c.mu.Unlock()
	c.cur.Store(cn)
	c.connects.Add(1)
	c.log.Info("tunnel up", "server", addr, "path", path, "path_reason", why, "address", pc.Address.String(), "routes", fmt.Sprint(pc.Routes),
		"mtu", applied.MTU, "gso", cn.gso, "cpus", c.procs.Current(),
		"cert_days_left", int(time.Until(m.leaf.NotAfter).Hours()/24), "renewal", renew)
	if km == nil && tunnel.HasCap(pc.Caps, tunnel.CapRenew) {
		c.log.Warn("the gateway offers certificate renewal, but this profile cannot renew: the certificate stays until it expires", "why", whyNot,
			"not_after", m.leaf.NotAfter.Format(time.RFC3339))
	}
	if c.material() == m {
		c.dropPrevious() // a session with the current pair succeeded
	}
	up()
	return renew, nil
}

// tlsState is the TLS state of the session's connection, on either path
// (renewal binds its request to it).
func (cn *conn) tlsState() tls.ConnectionState {
	if cn.tls != nil {
		return cn.tls.ConnectionState()
	}
	return cn.qc.ConnectionState().TLS
}

// drop ends the session from a writer or timer: it closes the socket under
// the TLS conn (tls.Conn.Close would first try to send close_notify to a
// gateway that may not be reading), which unblocks readStream. A write
// that stalled marks the gateway silent.
func (cn *conn) drop(err error) {
	if errors.Is(err, tunnel.ErrStalled) || errors.Is(err, masque.ErrStalled) {
		cn.silent.Store(true)
	}
	cn.hangup()
}

// routineTimers sends keepalives and closes a session whose gateway went
// silent or stopped reading (which unblocks readStream). It never waits
// for the stream's writer: a keepalive goes only when no write is in
// progress, and a write blocked past the timeout is a stall.
func (c *Client) routineTimers(ctx context.Context, cn *conn, pc tunnel.Config) {
	// Keepalive 0 means never, timeout 0 never drop; tick often enough for
	// whichever is set.
	period := pc.Keepalive
	if period == 0 && pc.Timeout > 0 {
		period = max(pc.Timeout/4, time.Millisecond)
	}
	if period <= 0 {
		<-ctx.Done()
		return
	}
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if busy := cn.w.Busy(now); pc.Timeout > 0 && busy > pc.Timeout {
				c.log.Warn("gateway not reading; dropping the session", "write_blocked", busy.Round(time.Second).String())
				cn.drop(tunnel.ErrStalled)
				return
			}
			if idle := now.Sub(time.Unix(0, cn.lastRecv.Load())); pc.Timeout > 0 && idle > pc.Timeout {
				c.log.Warn("gateway silent; dropping the session", "idle", idle.Round(time.Second).String())
				cn.silent.Store(true)
				cn.drop(nil)
				return
			}
			if pc.Keepalive == 0 {
				continue
			}
			if _, err := cn.w.TryWriteControl(tunnel.FrameKeepalive, nil); err != nil {
				cn.drop(err)
				return
			}
		}
	}
}

// recvBatches recycles readStream's batch (BatchSize x 64 KiB: 8 MiB with
// the wireguard TUN) across reconnects, so a laptop that roams does not
// allocate and zero a fresh one per session.
var recvBatches sync.Pool

func recvBatch(n int) *tunnel.Batch {
	if b, ok := recvBatches.Get().(*tunnel.Batch); ok && len(b.Bufs) == n {
		b.N = 0
		return b
	}
	return tunnel.NewBatch(n, tunnel.Headroom+tunnel.MaxPayload)
}

// closeFrame is the error for a Close frame from the gateway.
func closeFrame(payload []byte) error {
	m, err := tunnel.DecodeClose(payload)
	if err != nil {
		return fmt.Errorf("bad close frame from gateway: %w", err)
	}
	return &closeError{reason: m.Reason}
}

// readStream relays gateway -> TUN until the stream fails: each batch goes
// through tunnel.Inbound (congestion, header validation for the pushed MTU,
// order-keeping compaction, one TUN write). The laptop passes no verdict:
// what reaches it is what the gateway's rules let through.
func (c *Client) readStream(cn *conn) error {
	b := recvBatch(c.dev.BatchSize())
	defer recvBatches.Put(b)
	in := tunnel.Inbound{Dev: c.dev, MTU: c.pushedMTU(), Drops: &c.drops, AQM: tunnel.NewAQM(), Packets: &c.packetsIn, Bytes: &c.bytesIn}
	onControl := func(typ byte, payload []byte) error {
		switch typ {
		case tunnel.FrameKeepalive:
			// Answer at once: the gateway probes a session this way when
			// another connection presents the same certificate, and keeps
			// the session that answers (a busy writer is traffic enough).
			_, err := cn.w.TryWriteControl(tunnel.FrameKeepalive, nil)
			return err
		case tunnel.FrameClose:
			return closeFrame(payload)
		case tunnel.FrameRenewed:
			return c.onRenewed(cn, payload)
		case tunnel.FramePush:
			if err := c.onPush(payload); err != nil {
				return err
			}
			in.MTU = c.pushedMTU()
			return nil
		}
		return fmt.Errorf("unexpected control frame %#x from gateway", typ)
	}
	for {
		res, err := in.ReadStream(cn.r, b, cn.gso, cn.backlog, onControl)
		cn.lastRecv.Store(time.Now().UnixNano())
		c.received(res)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("gateway closed the connection")
			}
			return err
		}
	}
}

// pushedMTU is the tunnel MTU the gateway pushed last.
func (c *Client) pushedMTU() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pushed.MTU
}

// received logs what one batch from the gateway did (its Inbound counted
// it).
func (c *Client) received(res tunnel.InboundResult) {
	if res.WriteErr != nil {
		c.log.Debug("write TUN failed", "err", res.WriteErr, "packets", res.Written)
	}
}

// noteTrying records the gateway a connection attempt goes to, for status
// while not connected.
func (c *Client) noteTrying(addr string) {
	c.mu.Lock()
	c.trying = addr
	c.mu.Unlock()
}

// Status is the answer to `sallyport status`.
type Status struct {
	// Profile is the profile's name (its file's, without .toml) and
	// Config the file it was started from.
	Profile   string `json:"profile"`
	Config    string `json:"config"`
	Connected bool   `json:"connected"`
	// Server is the gateway of the session, or of the last one while
	// reconnecting ("" before the first); Trying, while not connected, is
	// the gateway being tried now or last.
	Server string `json:"server"`
	Trying string `json:"trying,omitempty"`
	// Path is how the laptop reaches the gateway: "quic" (the datagram
	// path, CONNECT-IP over QUIC) or "tls" (the TLS stream); PathReason
	// says why (UDP blocked, the config, ...).
	Path       string `json:"path,omitempty"`
	PathReason string `json:"path_reason,omitempty"`
	// MTU is the tunnel's MTU now (on the datagram path it follows the
	// QUIC datagram size).
	MTU        int       `json:"mtu,omitempty"`
	Address    string    `json:"address"`
	Address6   string    `json:"address6,omitempty"` // the IPv6 tunnel address of a dual-stack tunnel
	Routes     []string  `json:"routes"`
	DNS        []string  `json:"dns"`
	Since      time.Time `json:"since"`
	BytesIn    uint64    `json:"bytes_in"`
	BytesOut   uint64    `json:"bytes_out"`
	PacketsIn  uint64    `json:"packets_in"`
	PacketsOut uint64    `json:"packets_out"`
	// DroppedCongestion counts bulk packets dropped on purpose because
	// the laptop fell behind the gateway's stream (tunnel.AQM); it is
	// Dropped["congestion"], kept for scripts that read it.
	DroppedCongestion uint64 `json:"dropped_congestion"`
	// Dropped counts the packets the laptop dropped, by reason
	// (tunnel.LaptopDrops: congestion; offline, read from the TUN while
	// no session was up; malformed, from the gateway and refused).
	Dropped      map[string]uint64 `json:"dropped"`
	Device       string            `json:"device"`
	CertNotAfter time.Time         `json:"cert_not_after"`
	CertDaysLeft int               `json:"cert_days_left"`
	// CertSerial is the serial of the certificate in use, CertLineage the
	// serial of the one the admin issued (equal until the first renewal).
	CertSerial  string `json:"cert_serial"`
	CertLineage string `json:"cert_lineage"`
	// Renewal: this session renews its certificate (the gateway offers it
	// and the profile can take it); RenewAt is when it renews next,
	// Renewals how often it did since `up`, RenewError why the last try
	// failed.
	Renewal    bool      `json:"renewal"`
	RenewAt    time.Time `json:"renew_at,omitzero"`
	RenewedAt  time.Time `json:"renewed_at,omitzero"`
	Renewals   int       `json:"renewals"`
	RenewError string    `json:"renew_error,omitempty"`
	// KeyKind is where the device key lives: "file", "tpm" or "pkcs11";
	// KeyLocation says it in words (the file, the TPM and key file, the
	// token and object).
	KeyKind     string `json:"key_kind"`
	KeyLocation string `json:"key_location"`
	LastError   string `json:"last_error,omitempty"`
	// DNSMode is how the pushed DNS is applied: "systemd-resolved" (per
	// link, over D-Bus) or "resolv.conf" (rewritten, restored on down);
	// empty when no DNS was pushed or it could not be applied.
	DNSMode string `json:"dns_mode,omitempty"`
	// Refused is the code of the refusal or close reason that ended the
	// last attempt (the shared vocabulary: revoked, no-policy, kicked, ...,
	// or bad-certificate, gateway-cert, pin-mismatch, gateway-silent);
	// Message says it in a sentence for the employee. Both are empty while
	// connected and after plain network trouble.
	Refused string `json:"refused,omitempty"`
	Message string `json:"message,omitempty"`
	// RetryAt is when the next connection attempt starts (zero while
	// connected).
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Installed is the routing table, rules and kill switch as the kernel
	// has them now (read back, not remembered): they stay while the client
	// reconnects.
	Installed  Installed `json:"installed"`
	InstallErr string    `json:"install_error,omitempty"`
}

// Status reports the tunnel's state.
func (c *Client) Status() Status {
	m := c.material()
	id := pki.IdentityOf(m.leaf)
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{
		Connected: c.connected, Server: c.server, Path: c.path, PathReason: c.pathWhy, Since: c.since, LastError: c.lastError,
		Refused: c.refused, Message: c.message, RetryAt: c.retryAt,
		BytesIn: c.bytesIn.Load(), BytesOut: c.bytesOut.Load(), PacketsIn: c.packetsIn.Load(), PacketsOut: c.packetsOut.Load(),
		DroppedCongestion: c.drops.Load(tunnel.DropCongestion), Dropped: c.drops.Map(tunnel.LaptopDrops),
		Device: id.Device, CertNotAfter: m.leaf.NotAfter, CertSerial: id.Serial, CertLineage: id.Lineage,
		CertDaysLeft: int(time.Until(m.leaf.NotAfter).Hours() / 24), Routes: []string{}, DNS: []string{},
		KeyKind: string(m.keyKind), KeyLocation: m.keyAt,
		Profile: Profile(c.cfg.Path), Config: c.cfg.Path,
		Renewal: c.renewing && c.connected, Renewals: c.renewals, RenewedAt: c.renewedAt, RenewError: c.renewError,
	}
	if !c.connected {
		st.Trying = c.trying
	}
	if st.Renewal {
		st.RenewAt = c.renewDue
	}
	if c.pushed.Address.IsValid() {
		st.Address = c.pushed.Address.String()
	}
	if c.connected {
		st.MTU = c.tunMTU(c.pushed.MTU)
	}
	if c.pushed.Address6.IsValid() {
		st.Address6 = c.pushed.Address6.String()
	}
	for _, r := range c.pushed.Routes {
		st.Routes = append(st.Routes, r.String())
	}
	for _, d := range c.pushed.DNS {
		st.DNS = append(st.DNS, d.String())
	}
	if c.net != nil {
		var err error
		if st.Installed, err = installed(c.sys, c.net.dev, c.net.table); err != nil {
			st.InstallErr = err.Error()
		}
		st.DNSMode = c.net.DNSMode()
	}
	return st
}

func (c *Client) handleAdmin(_ context.Context, req adminsock.Request) (any, error) {
	switch req.Cmd {
	case "status":
		return c.Status(), nil
	case "down":
		c.log.Info("down requested over the admin socket")
		c.Down()
		return map[string]bool{"down": true}, nil
	}
	return nil, fmt.Errorf("unknown command %q", req.Cmd)
}
