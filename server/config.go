package server

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/metricsrv"
	"github.com/sallyport/sallyport/internal/procs"
	"github.com/sallyport/sallyport/internal/tomlconf"
	"github.com/sallyport/sallyport/server/policy"
	"github.com/sallyport/sallyport/tunnel"
)

// Config is the gateway configuration (server.toml). configs/server.toml
// documents every key and marks which ones a reload applies.
type Config struct {
	Listen string `toml:"listen"`
	// DrainTimeout is how long a drain (SIGTERM, `server drain`) waits for
	// the sessions to end before the gateway exits anyway.
	DrainTimeout time.Duration   `toml:"drain_timeout"`
	TLS          TLSConfig       `toml:"tls"`
	Tunnel       TunnelConfig    `toml:"tunnel"`
	QUIC         QUICConfig      `toml:"quic"`
	Admin        AdminConfig     `toml:"admin"`
	Metrics      MetricsConfig   `toml:"metrics"`
	Log          LogConfig       `toml:"log"`
	Renewal      RenewalConfig   `toml:"renewal"`
	Policies     []policy.Policy `toml:"policy"`
	Devices      []DeviceConfig  `toml:"device"`

	// Path is the file the config was loaded from ("" when built in code).
	Path string `toml:"-"`
}

// TLSConfig holds the gateway's certificate and what it trusts.
type TLSConfig struct {
	Cert     string `toml:"cert"`
	Key      string `toml:"key"`
	ClientCA string `toml:"client_ca"`
	CRL      string `toml:"crl"`
	// HandshakeTimeout bounds a connection from accept to a live session.
	HandshakeTimeout time.Duration `toml:"handshake_timeout"`
	// FirstByteTimeout and HelloTimeout bound, from the accept, a
	// connection's first byte and its whole TLS ClientHello (preauth.go).
	FirstByteTimeout time.Duration `toml:"first_byte_timeout"`
	HelloTimeout     time.Duration `toml:"hello_timeout"`
	// MaxHandshakes caps TLS handshakes in flight (0:
	// DefaultMaxHandshakesPerCPU per CPU); when all are busy the oldest
	// connection still waiting for its ClientHello makes room, else the
	// newcomer is closed before TLS.
	MaxHandshakes int `toml:"max_handshakes"`
	// MaxHandshakesPerSource caps those of one IPv4 address or IPv6 /64
	// (0: DefaultMaxHandshakesPerSource).
	MaxHandshakesPerSource int      `toml:"max_handshakes_per_source"`
	AllowFingerprints      []string `toml:"allow_fingerprints"`
	AllowSubjects          []string `toml:"allow_subjects"`
	// CRLStale is what a CRL past its nextUpdate does to new sessions:
	// CRLStaleRefuse (default) or CRLStaleWarn.
	CRLStale string `toml:"crl_stale"`
	// AcceptAnyEKU admits device certificates without an extended key
	// usage extension or with anyExtendedKeyUsage (off: clientAuth must be
	// listed).
	AcceptAnyEKU bool `toml:"accept_any_eku"`
}

// Values of tls.crl_stale.
const (
	CRLStaleRefuse = "refuse"
	CRLStaleWarn   = "warn"
)

// TunnelConfig describes the gateway's TUN device and the address pools.
type TunnelConfig struct {
	Device   string `toml:"device"`
	IPv4Pool string `toml:"ipv4_pool"`
	// IPv6Pool is the IPv6 tunnel prefix (a /64 or smaller, up to /120).
	// At least one of the pools is required; with both, every device gets
	// one address of each (dual stack).
	IPv6Pool string `toml:"ipv6_pool"`
	// LeaseFile keeps address leases across restarts (leases.go); default
	// leases.json in $STATE_DIRECTORY or /var/lib/sallyport.
	LeaseFile string `toml:"lease_file"`
	// LeaseTTL is how long a lease of a device that stays away is kept.
	LeaseTTL time.Duration `toml:"lease_ttl"`
	// Masquerade lists the interfaces (or "auto") behind which the pools
	// are source-NATed (nftables masquerade, nat_linux.go); empty = routed.
	Masquerade []string      `toml:"masquerade"`
	Driver     string        `toml:"driver"`
	MTU        int           `toml:"mtu"`
	Keepalive  time.Duration `toml:"keepalive"`
	Timeout    time.Duration `toml:"timeout"`
	// CPUs is how many CPUs the gateway's Go scheduler runs on at once
	// (GOMAXPROCS): 0 = one per live session or handshake in flight, up to
	// the machine's CPUs.
	CPUs int `toml:"cpus"`
	// MaxSessions caps live sessions; a further device is refused with
	// reason "capacity" (0: DefaultMaxSessions).
	MaxSessions int `toml:"max_sessions"`
}

// QUICConfig is the datagram path: CONNECT-IP (RFC 9484) over QUIC on
// the listen address's port over UDP (quic.go, masque.go).
type QUICConfig struct {
	// Enabled serves the datagram path (default true). Off, the gateway
	// listens on TCP only and laptops use the TLS stream.
	Enabled *bool `toml:"enabled"`
}

// On reports whether the datagram path is served.
func (q QUICConfig) On() bool { return q.Enabled == nil || *q.Enabled }

// AdminConfig is the local control socket.
type AdminConfig struct {
	Socket string `toml:"socket"`
	// Pprof lets `sallyport server pprof` fetch runtime profiles through
	// the socket; off by default.
	Pprof bool `toml:"pprof"`
	// Group, if set, may use the socket for `server status` without root
	// (socket mode 0660 in that group).
	Group string `toml:"group"`
	// GroupCommands are further commands the group may send (kick,
	// reload, drain, pprof); by default they stay root-only.
	GroupCommands []string `toml:"group_commands"`
}

// adminCommands are the commands group_commands may name.
var adminCommands = []string{"kick", "reload", "drain", "pprof"}

// LogConfig is how the gateway logs (docs/monitoring.md, "Logs").
type LogConfig struct {
	// Format is "text" (key=value, the default) or "json"; the command
	// line's --log-format wins over it. Applies at start.
	Format string `toml:"format"`
	// LogDrops logs, per device and at most every ten seconds, the packets
	// the gateway dropped for it, by reason (rate-limited).
	LogDrops bool `toml:"log_drops"`
}

// MetricsConfig is the Prometheus endpoint (docs/monitoring.md).
type MetricsConfig struct {
	// Listen is the address of the HTTP listener serving /metrics; empty
	// turns metrics off. It may not be the VPN listener.
	Listen string `toml:"listen"`
	// PerDevice adds per-device series (one set per connected device: a
	// cardinality choice for fleets that want it).
	PerDevice bool `toml:"per_device"`
}

// RenewalConfig is the online issuer that renews device certificates
// inside their sessions (renew.go; docs/renewal.md). Renewal is on when
// issuer_cert is set.
type RenewalConfig struct {
	// IssuerCert and IssuerKey are the online issuer (`sallyport pki
	// issuer`): its certificate file (the issuer first, then any
	// certificates between it and a CA of tls.client_ca) and its key,
	// checked like the gateway key.
	IssuerCert string `toml:"issuer_cert"`
	IssuerKey  string `toml:"issuer_key"`
	// Lifetime of the certificates it issues (cut at the issuer's own
	// expiry).
	Lifetime time.Duration `toml:"lifetime"`
	// RenewAt is the fraction of a certificate's lifetime at which the
	// laptop asks for the next one (the laptop adds jitter).
	RenewAt float64 `toml:"renew_at"`
	// CABundle is the CA bundle sent to laptops with every renewal, which
	// they trust for the gateway from then on (how they learn the next CA
	// during a rotation); only devices whose chain ends at a CA of this
	// bundle are renewed. Default: tls.client_ca.
	CABundle string `toml:"ca_bundle"`
	// Record is the issuance record (one JSON line per renewal) that
	// `sallyport pki list --renewed` reads; default renewals.jsonl in
	// $STATE_DIRECTORY or /var/lib/sallyport.
	Record string `toml:"record"`
}

// Enabled reports whether the gateway renews certificates.
func (r *RenewalConfig) Enabled() bool { return r.IssuerCert != "" }

// DeviceConfig pins a device, by certificate CN or fingerprint, to a static
// tunnel address.
type DeviceConfig struct {
	CN          string `toml:"cn"`
	Fingerprint string `toml:"fingerprint"`
	IPv4        string `toml:"ipv4"`
	IPv6        string `toml:"ipv6"`
}

// Defaults for keys left out of server.toml.
const (
	DefaultListen           = "0.0.0.0:443"
	DefaultDevice           = "sp0"
	DefaultDriver           = "wireguard"
	DefaultMTU              = 1500
	DefaultKeepalive        = 10 * time.Second
	DefaultTimeout          = 35 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultDrainTimeout     = 10 * time.Second
	DefaultAdminSocket      = "/run/sallyport/server.sock"
	DefaultStateDir         = "/var/lib/sallyport"
	DefaultLeaseTTL         = 30 * 24 * time.Hour
	DefaultRenewalLifetime  = 7 * 24 * time.Hour
	DefaultRenewAt          = 2.0 / 3
	// MasqueradeAuto in tunnel.masquerade NATs out of the interfaces that
	// carry the routes the policies push.
	MasqueradeAuto = "auto"
)

// LoadConfig reads, defaults and validates server.toml. Relative file names
// are taken relative to the config file's directory.
func LoadConfig(path string) (*Config, error) {
	var c Config
	if err := tomlconf.Load(path, &c); err != nil {
		return nil, err
	}
	c.Path = path
	c.TLS.Cert = tomlconf.Resolve(path, c.TLS.Cert)
	c.TLS.Key = tomlconf.Resolve(path, c.TLS.Key)
	c.TLS.ClientCA = tomlconf.Resolve(path, c.TLS.ClientCA)
	c.TLS.CRL = tomlconf.Resolve(path, c.TLS.CRL)
	if c.Tunnel.LeaseFile != "" {
		c.Tunnel.LeaseFile = tomlconf.Resolve(path, c.Tunnel.LeaseFile)
	}
	for _, f := range []*string{&c.Renewal.IssuerCert, &c.Renewal.IssuerKey, &c.Renewal.CABundle, &c.Renewal.Record} {
		if *f != "" {
			*f = tomlconf.Resolve(path, *f)
		}
	}
	if err := c.normalize(); err != nil {
		return nil, tomlconf.Where(path, err)
	}
	return &c, nil
}

// normalize fills defaults and checks every key that can be checked without
// reading other files.
func (c *Config) normalize() error {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("key \"listen\": %w", err)
	}
	for key, v := range map[string]string{"tls.cert": c.TLS.Cert, "tls.key": c.TLS.Key, "tls.client_ca": c.TLS.ClientCA} {
		if v == "" {
			return fmt.Errorf("key %q is required", key)
		}
	}
	if c.TLS.HandshakeTimeout == 0 {
		c.TLS.HandshakeTimeout = DefaultHandshakeTimeout
	}
	switch c.TLS.CRLStale {
	case "":
		c.TLS.CRLStale = CRLStaleRefuse
	case CRLStaleRefuse, CRLStaleWarn:
	default:
		return fmt.Errorf("key \"tls.crl_stale\": %q is not \"refuse\" or \"warn\"", c.TLS.CRLStale)
	}
	if c.TLS.MaxHandshakes == 0 {
		c.TLS.MaxHandshakes = DefaultMaxHandshakesPerCPU * runtime.NumCPU()
	}
	if c.TLS.MaxHandshakes < 0 {
		return fmt.Errorf("key \"tls.max_handshakes\": %d is negative", c.TLS.MaxHandshakes)
	}
	if c.TLS.HandshakeTimeout < 0 {
		return errors.New("key \"tls.handshake_timeout\" must be positive")
	}
	if err := c.TLS.normalizePreauth(); err != nil {
		return err
	}
	t := &c.Tunnel
	if t.Device == "" {
		t.Device = DefaultDevice
	}
	if len(t.Device) > 15 {
		return fmt.Errorf("key \"tunnel.device\": interface name %q longer than 15 bytes", t.Device)
	}
	if t.Driver == "" {
		t.Driver = DefaultDriver
	}
	if t.Driver != "wireguard" && t.Driver != "water" {
		return fmt.Errorf("key \"tunnel.driver\": %q is not \"wireguard\" or \"water\"", t.Driver)
	}
	if t.IPv4Pool == "" && t.IPv6Pool == "" {
		return errors.New("key \"tunnel.ipv4_pool\" or \"tunnel.ipv6_pool\" is required")
	}
	if _, err := c.Pool(); err != nil {
		return err
	}
	if _, err := c.Pool6(); err != nil {
		return err
	}
	if t.LeaseFile == "" {
		t.LeaseFile = filepath.Join(stateDir(), "leases.json")
	}
	if t.LeaseTTL == 0 {
		t.LeaseTTL = DefaultLeaseTTL
	}
	if t.LeaseTTL < time.Minute {
		return fmt.Errorf("key \"tunnel.lease_ttl\": %v is shorter than 1m", t.LeaseTTL)
	}
	for _, m := range t.Masquerade {
		if m == MasqueradeAuto && len(t.Masquerade) > 1 {
			return errors.New("key \"tunnel.masquerade\": \"auto\" cannot be combined with interface names")
		}
		if m == "" || len(m) > 15 || strings.ContainsAny(m, "/ \t") {
			return fmt.Errorf("key \"tunnel.masquerade\": %q is not an interface name", m)
		}
	}
	if t.MTU == 0 {
		t.MTU = DefaultMTU
	}
	if t.MTU < 576 || t.MTU > 65535 {
		return fmt.Errorf("key \"tunnel.mtu\": %d is outside 576..65535", t.MTU)
	}
	if err := procs.Check(t.CPUs); err != nil {
		return fmt.Errorf("key \"tunnel.cpus\": %w", err)
	}
	if t.MaxSessions == 0 {
		t.MaxSessions = DefaultMaxSessions
	}
	if t.MaxSessions < 0 {
		return fmt.Errorf("key \"tunnel.max_sessions\": %d is negative", t.MaxSessions)
	}
	if t.Keepalive == 0 {
		t.Keepalive = DefaultKeepalive
	}
	if t.Timeout == 0 {
		t.Timeout = DefaultTimeout
	}
	if t.Keepalive < time.Second || t.Timeout < 2*t.Keepalive {
		return fmt.Errorf("keys \"tunnel.keepalive\" (%v) and \"tunnel.timeout\" (%v): keepalive must be >= 1s and timeout >= 2 x keepalive", t.Keepalive, t.Timeout)
	}
	if c.Admin.Socket == "" {
		c.Admin.Socket = DefaultAdminSocket
	}
	for _, cmd := range c.Admin.GroupCommands {
		if !slices.Contains(adminCommands, cmd) {
			return fmt.Errorf("key \"admin.group_commands\": %q is not one of %v", cmd, adminCommands)
		}
	}
	if len(c.Admin.GroupCommands) > 0 && c.Admin.Group == "" {
		return errors.New("key \"admin.group_commands\" needs \"admin.group\"")
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.DrainTimeout < 0 {
		return errors.New("key \"drain_timeout\" must be positive")
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		return fmt.Errorf("key \"log.format\": %q is not \"text\" or \"json\"", c.Log.Format)
	}
	if err := c.Metrics.check(c.Listen); err != nil {
		return err
	}
	if err := c.Renewal.normalize(c); err != nil {
		return err
	}
	if len(c.Policies) == 0 {
		return errors.New("no [[policy]] tables: every device would be refused")
	}
	pool4, _ := c.Pool()
	pool6, _ := c.Pool6()
	for i, d := range c.Devices {
		if (d.CN == "") == (d.Fingerprint == "") {
			return fmt.Errorf("[[device]] #%d: give exactly one of \"cn\" or \"fingerprint\"", i+1)
		}
		if d.IPv4 == "" && d.IPv6 == "" {
			return fmt.Errorf("[[device]] #%d: give \"ipv4\", \"ipv6\" or both", i+1)
		}
		if err := checkStatic("ipv4", d.IPv4, pool4, "tunnel.ipv4_pool"); err != nil {
			return fmt.Errorf("[[device]] #%d: %w", i+1, err)
		}
		if err := checkStatic("ipv6", d.IPv6, pool6, "tunnel.ipv6_pool"); err != nil {
			return fmt.Errorf("[[device]] #%d: %w", i+1, err)
		}
	}
	return nil
}

// stateDir is where the gateway keeps its state: systemd's
// StateDirectory= ($STATE_DIRECTORY), else DefaultStateDir.
func stateDir() string {
	if sd, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":"); sd != "" {
		return sd
	}
	return DefaultStateDir
}

// normalize fills the renewal defaults and checks its keys.
func (r *RenewalConfig) normalize(c *Config) error {
	if !r.Enabled() {
		if r.IssuerKey != "" || r.CABundle != "" || r.Record != "" || r.Lifetime != 0 || r.RenewAt != 0 {
			return errors.New("key \"renewal.issuer_cert\" is required when [renewal] is set (make an issuer with: sallyport pki issuer)")
		}
		return nil
	}
	if r.IssuerKey == "" {
		return errors.New("key \"renewal.issuer_key\" is required with renewal.issuer_cert")
	}
	if r.Lifetime == 0 {
		r.Lifetime = DefaultRenewalLifetime
	}
	if r.Lifetime < time.Minute {
		return fmt.Errorf("key \"renewal.lifetime\": %v is shorter than 1m", r.Lifetime)
	}
	if r.RenewAt == 0 {
		r.RenewAt = DefaultRenewAt
	}
	if !(r.RenewAt >= tunnel.MinRenewAt && r.RenewAt <= tunnel.MaxRenewAt) {
		return fmt.Errorf("key \"renewal.renew_at\": %v is outside %v..%v (a fraction of the certificate's lifetime)", r.RenewAt, tunnel.MinRenewAt, tunnel.MaxRenewAt)
	}
	if r.CABundle == "" {
		r.CABundle = c.TLS.ClientCA
	}
	if r.Record == "" {
		r.Record = filepath.Join(stateDir(), "renewals.jsonl")
	}
	return nil
}

// checkStatic validates a [[device]] address: it must be a usable address
// of its pool (not the network, gateway or last address).
func checkStatic(key, v string, pool netip.Prefix, poolKey string) error {
	if v == "" {
		return nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" || (key == "ipv4") != a.Is4() || a.Is4In6() {
		return fmt.Errorf("key %q: %q is not an %s address", key, v, map[string]string{"ipv4": "IPv4", "ipv6": "IPv6"}[key])
	}
	if !pool.IsValid() {
		return fmt.Errorf("key %q: %s given but %s is not set", key, a, poolKey)
	}
	if !pool.Contains(a) || a == pool.Addr().Next() || a == pool.Addr() || a == lastAddr(pool) {
		return fmt.Errorf("key %q: %s is not a usable address of %s %s", key, a, poolKey, pool)
	}
	return nil
}

// Pool returns the parsed tunnel.ipv4_pool, masked (zero when unset).
func (c *Config) Pool() (netip.Prefix, error) {
	if c.Tunnel.IPv4Pool == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(c.Tunnel.IPv4Pool)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("key \"tunnel.ipv4_pool\": %q is not an IPv4 CIDR", c.Tunnel.IPv4Pool)
	}
	if p.Bits() > 30 {
		return netip.Prefix{}, fmt.Errorf("key \"tunnel.ipv4_pool\": %s is too small (need /30 or larger)", p)
	}
	return p.Masked(), nil
}

// check validates metrics.listen: a host:port that is not the VPN
// listener's port on an overlapping address.
func (m *MetricsConfig) check(vpn string) error {
	if m.Listen == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(m.Listen)
	if err != nil || port == "" {
		return fmt.Errorf("key \"metrics.listen\": %q is not host:port", m.Listen)
	}
	vhost, vport, _ := net.SplitHostPort(vpn)
	any := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	if port == vport && (host == vhost || any(host) || any(vhost)) {
		return fmt.Errorf("key \"metrics.listen\": %s overlaps the VPN listener %s; metrics are never served on the VPN port", m.Listen, vpn)
	}
	return nil
}

// normalizePreauth defaults and checks the pre-authentication limits
// (preauth.go): first byte <= ClientHello <= whole handshake.
func (t *TLSConfig) normalizePreauth() error {
	if t.HelloTimeout == 0 {
		t.HelloTimeout = min(DefaultHelloTimeout, t.HandshakeTimeout)
	}
	if t.FirstByteTimeout == 0 {
		t.FirstByteTimeout = min(DefaultFirstByteTimeout, t.HelloTimeout)
	}
	switch {
	case t.FirstByteTimeout < 0 || t.HelloTimeout < 0:
		return errors.New("keys \"tls.first_byte_timeout\" and \"tls.hello_timeout\" must be positive")
	case t.HelloTimeout > t.HandshakeTimeout:
		return fmt.Errorf("key \"tls.hello_timeout\": %v is longer than tls.handshake_timeout (%v)", t.HelloTimeout, t.HandshakeTimeout)
	case t.FirstByteTimeout > t.HelloTimeout:
		return fmt.Errorf("key \"tls.first_byte_timeout\": %v is longer than tls.hello_timeout (%v)", t.FirstByteTimeout, t.HelloTimeout)
	}
	if t.MaxHandshakesPerSource == 0 {
		t.MaxHandshakesPerSource = DefaultMaxHandshakesPerSource
	}
	if t.MaxHandshakesPerSource < 0 {
		return fmt.Errorf("key \"tls.max_handshakes_per_source\": %d is negative", t.MaxHandshakesPerSource)
	}
	return nil
}

// wildcardWarning is what the gateway says at start and `server check`
// says about a metrics listener on every address ("" when it is not).
func (m *MetricsConfig) wildcardWarning() string {
	if m.Listen == "" || !metricsrv.Wildcard(m.Listen) {
		return ""
	}
	return fmt.Sprintf("metrics.listen %s is a wildcard address: /metrics (plain HTTP, no authentication) is served on every address of the gateway, the public one included; bind it to 127.0.0.1 or a management address (devices reach it through the tunnel only if a policy names the gateway's address)", m.Listen)
}

// Pool6 returns the parsed tunnel.ipv6_pool, masked (zero when unset). It
// must be a /64 or smaller and at most a /120: large enough to hand out,
// small enough that the kernel's own SLAAC has no part in it.
func (c *Config) Pool6() (netip.Prefix, error) {
	if c.Tunnel.IPv6Pool == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(c.Tunnel.IPv6Pool)
	if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("key \"tunnel.ipv6_pool\": %q is not an IPv6 CIDR", c.Tunnel.IPv6Pool)
	}
	if p.Bits() < 64 || p.Bits() > 120 {
		return netip.Prefix{}, fmt.Errorf("key \"tunnel.ipv6_pool\": %s must be a /64 to /120", p)
	}
	if a := p.Addr(); !a.IsGlobalUnicast() && !a.IsPrivate() || a.IsLinkLocalUnicast() {
		return netip.Prefix{}, fmt.Errorf("key \"tunnel.ipv6_pool\": %s is not a unicast prefix (use a ULA such as fd00:8::/64)", p)
	}
	return p.Masked(), nil
}
