package client

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/procs"
	"github.com/sallyport/sallyport/internal/tomlconf"
	"github.com/sallyport/sallyport/internal/userfile"
	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/pki/hwkey"
)

// Config is the laptop configuration (client.toml); configs/client.toml
// documents every key. `sallyport pki bundle` writes one with the CA,
// certificate and key inline.
type Config struct {
	Server     string          `toml:"server"`
	Servers    []string        `toml:"servers"`
	ServerName string          `toml:"server_name"`
	TLS        TLSConfig       `toml:"tls"`
	Tunnel     TunnelConfig    `toml:"tunnel"`
	Admin      AdminConfig     `toml:"admin"`
	Reconnect  ReconnectConfig `toml:"reconnect"`
	Transport  TransportConfig `toml:"transport"`
	Metrics    MetricsConfig   `toml:"metrics"`

	// Path is the file the config was loaded from.
	Path string `toml:"-"`

	// stateDir and runtimeDir are the client's state and runtime
	// directories (StateDir, RuntimeDir), fixed when the config is loaded.
	stateDir, runtimeDir string
}

// StateDir is where the laptop keeps what must survive a crash and a
// reboot (what the gateway said last, the resolv.conf backup): the first
// directory of $STATE_DIRECTORY (the unit's StateDirectory=), else
// /var/lib/sallyport.
func StateDir() string { return envDir("STATE_DIRECTORY", "/var/lib/sallyport") }

// RuntimeDir is where the laptop keeps what lives only while the machine
// runs (the device lock, the admin sockets): the first directory of $RUNTIME_DIRECTORY (the
// unit's RuntimeDirectory=), else /run/sallyport.
func RuntimeDir() string { return envDir("RUNTIME_DIRECTORY", "/run/sallyport") }

func envDir(env, def string) string {
	if d, _, _ := strings.Cut(os.Getenv(env), ":"); d != "" {
		return d
	}
	return def
}

func (c *Config) stateDirectory() string {
	if c.stateDir == "" {
		return StateDir()
	}
	return c.stateDir
}

func (c *Config) runtimeDirectory() string {
	if c.runtimeDir == "" {
		return RuntimeDir()
	}
	return c.runtimeDir
}

// TLSConfig names the trust anchor and the device's identity, as files or
// inline PEM.
type TLSConfig struct {
	CA      string `toml:"ca"`
	CAPEM   string `toml:"ca_pem"`
	Cert    string `toml:"cert"`
	CertPEM string `toml:"cert_pem"`
	Key     string `toml:"key"`
	KeyPEM  string `toml:"key_pem"`
	// KeyTPM is the device key's TPM key file (made by `sallyport pki csr
	// --tpm`): the key lives in this laptop's TPM, the file only wraps it.
	KeyTPM string `toml:"key_tpm"`
	// TPMDevice is the TPM for KeyTPM (default /dev/tpmrm0).
	TPMDevice string `toml:"tpm_device"`
	// KeyPKCS11 is an RFC 7512 pkcs11: URI naming the device key in a
	// token (smart card, security key), with module-path and pin-source.
	KeyPKCS11 string `toml:"key_pkcs11"`
	PinSHA256 string `toml:"pin_sha256"`
}

// hardwareKey is the device key's hardware reference ("" kind file).
func (t TLSConfig) hardwareKey() hwkey.Ref {
	return hwkey.Ref{TPMKey: t.KeyTPM, TPMDevice: t.TPMDevice, PKCS11: t.KeyPKCS11}
}

// TunnelConfig is the laptop's TUN device.
type TunnelConfig struct {
	Device string `toml:"device"`
	Driver string `toml:"driver"`
	// CPUs is how many CPUs the client's Go scheduler runs on at once
	// (GOMAXPROCS): 0 = automatic, which is one (see internal/procs).
	CPUs int `toml:"cpus"`
	// Table is the routing table the pushed routes go into, and the fwmark
	// of the client's own connection to the gateway (route.go).
	Table int `toml:"table"`
	// KillSwitch blocks everything leaving the laptop outside the tunnel
	// (killswitch.go); unset means on for a full tunnel, or as pushed.
	KillSwitch *bool `toml:"kill_switch"`
	// AllowLAN lets the kill switch pass traffic to the local networks.
	AllowLAN bool `toml:"allow_lan"`
	// tableAuto: neither table nor device was set, so the table follows
	// the device the kernel gives (spN uses DefaultTable+N) and two
	// profiles never share one.
	tableAuto bool
}

// AutoDevice is the device name when none is configured: the kernel gives
// the first free spN, so several profiles can be up at once.
const AutoDevice = "sp%d"

// AdminConfig is the local control socket used by `status` and `down`.
type AdminConfig struct {
	Socket string `toml:"socket"`
	// Group, if set, may use the socket for `sallyport status` without
	// root (socket mode 0660 in that group); `down` stays root-only.
	Group string `toml:"group"`
}

// MetricsConfig is the laptop's optional Prometheus endpoint (off when
// Listen is empty).
type MetricsConfig struct {
	Listen string `toml:"listen"`
}

// ReconnectConfig bounds the exponential backoff between attempts, and
// sets the wait after a refusal that needs an admin (revoked, no policy...).
type ReconnectConfig struct {
	MinDelay     time.Duration `toml:"min_delay"`
	MaxDelay     time.Duration `toml:"max_delay"`
	RefusedDelay time.Duration `toml:"refused_delay"`
}

// TransportConfig chooses the path to the gateway: the datagram path
// (CONNECT-IP over QUIC, quic.go) or the TLS stream.
type TransportConfig struct {
	// Mode is "auto" (default: the datagram path first, the TLS stream when
	// UDP is blocked or fails), "quic" (the datagram path only) or "tls"
	// (the TLS stream only).
	Mode string `toml:"mode"`
	// FallbackAfter is how long the datagram path gets before the TLS
	// stream is tried too (happy eyeballs); whichever is up first wins.
	FallbackAfter time.Duration `toml:"fallback_after"`
	// RetryUDP is how often a laptop that fell back to the TLS stream tries
	// the datagram path again, and moves to it when it works.
	RetryUDP time.Duration `toml:"retry_udp"`
}

// Transport modes.
const (
	TransportAuto = "auto"
	TransportQUIC = "quic"
	TransportTLS  = "tls"
)

// LoadConfig reads, defaults and validates client.toml.
func LoadConfig(path string) (*Config, error) {
	var c Config
	if err := tomlconf.Load(path, &c); err != nil {
		return nil, err
	}
	c.Path = path
	c.TLS.CA = tomlconf.Resolve(path, c.TLS.CA)
	c.TLS.Cert = tomlconf.Resolve(path, c.TLS.Cert)
	c.TLS.Key = tomlconf.Resolve(path, c.TLS.Key)
	c.TLS.KeyTPM = tomlconf.Resolve(path, c.TLS.KeyTPM)
	if err := c.normalize(); err != nil {
		return nil, tomlconf.Where(path, err)
	}
	return &c, nil
}

// TableFor is the routing table of a client on device dev when none is
// configured: DefaultTable+N for spN, DefaultTable for any other name.
func TableFor(dev string) int {
	if n, ok := strings.CutPrefix(dev, "sp"); ok {
		if i, err := strconv.Atoi(n); err == nil && i >= 0 && i < 1<<16 {
			return DefaultTable + i
		}
	}
	return DefaultTable
}

// DefaultSocket is the admin socket of the client using TUN device dev
// (or, without a device, of profile dev), in RuntimeDir.
func DefaultSocket(dev string) string { return filepath.Join(RuntimeDir(), "client-"+dev+".sock") }

func (c *Config) normalize() error {
	if c.stateDir == "" {
		c.stateDir = StateDir()
	}
	if c.runtimeDir == "" {
		c.runtimeDir = RuntimeDir()
	}
	if c.Metrics.Listen != "" {
		if _, port, err := net.SplitHostPort(c.Metrics.Listen); err != nil || port == "" {
			return fmt.Errorf("key \"metrics.listen\": %q is not host:port", c.Metrics.Listen)
		}
	}
	if c.Server != "" && len(c.Servers) > 0 {
		return errors.New("give \"server\" or \"servers\", not both")
	}
	if c.Server != "" {
		c.Servers = []string{c.Server}
	}
	if len(c.Servers) == 0 {
		return errors.New("key \"server\" is required (host:port of the gateway)")
	}
	for _, s := range c.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			return fmt.Errorf("key \"server\": %q: %w", s, err)
		}
	}
	if c.ServerName == "" {
		c.ServerName, _, _ = net.SplitHostPort(c.Servers[0])
	}
	for _, p := range []struct{ key, file, inline string }{
		{"tls.ca", c.TLS.CA, c.TLS.CAPEM}, {"tls.cert", c.TLS.Cert, c.TLS.CertPEM},
	} {
		if (p.file == "") == (p.inline == "") {
			return fmt.Errorf("give exactly one of %q or %q", p.key, p.key+"_pem")
		}
	}
	n := 0
	for _, v := range []string{c.TLS.Key, c.TLS.KeyPEM, c.TLS.KeyTPM, c.TLS.KeyPKCS11} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return errors.New(`give exactly one of "tls.key", "tls.key_pem" (a key file, or inline), "tls.key_tpm" (a key in this laptop's TPM) or "tls.key_pkcs11" (a key in a token)`)
	}
	if c.TLS.TPMDevice != "" && c.TLS.KeyTPM == "" {
		return errors.New(`key "tls.tpm_device" is set but "tls.key_tpm" is not`)
	}
	if c.TLS.KeyPKCS11 != "" {
		if _, err := hwkey.ParsePKCS11URI(c.TLS.KeyPKCS11); err != nil {
			return fmt.Errorf("key \"tls.key_pkcs11\": %w", err)
		}
	}
	if c.TLS.PinSHA256 != "" {
		n, err := pki.NormalizeFingerprint(c.TLS.PinSHA256)
		if err != nil {
			return fmt.Errorf("key \"tls.pin_sha256\": %w", err)
		}
		c.TLS.PinSHA256 = n
	}
	if c.Tunnel.Device == "" {
		c.Tunnel.Device = AutoDevice
	}
	if strings.Contains(c.Tunnel.Device, "%") && c.Tunnel.Device != AutoDevice {
		return fmt.Errorf("key \"tunnel.device\": %q: leave it out for the first free spN, or give a name without %%", c.Tunnel.Device)
	}
	if len(c.Tunnel.Device) > 15 {
		return fmt.Errorf("key \"tunnel.device\": interface name %q longer than 15 bytes", c.Tunnel.Device)
	}
	if err := procs.Check(c.Tunnel.CPUs); err != nil {
		return fmt.Errorf("key \"tunnel.cpus\": %w", err)
	}
	if c.Tunnel.Table == 0 {
		// A profile without a device follows the spN it gets at start
		// (DefaultTable+N); a named spN device gets DefaultTable+N now, so
		// two profiles naming sp0 and sp1 never share a table (one's start
		// or teardown would remove the other's routes and rules).
		c.Tunnel.Table, c.Tunnel.tableAuto = TableFor(c.Tunnel.Device), c.Tunnel.Device == AutoDevice
	}
	if t := c.Tunnel.Table; t < 1 || t > 0x7fffffff || t == 253 || t == 254 || t == 255 {
		return fmt.Errorf("key \"tunnel.table\": %d is not a free routing table (1..2147483647, not 253-255: default, main, local)", t)
	}
	if c.Tunnel.Driver == "" {
		c.Tunnel.Driver = "wireguard"
	}
	if c.Tunnel.Driver != "wireguard" && c.Tunnel.Driver != "water" {
		return fmt.Errorf("key \"tunnel.driver\": %q is not \"wireguard\" or \"water\"", c.Tunnel.Driver)
	}
	if c.Admin.Socket == "" {
		c.Admin.Socket = DefaultSocket(c.Tunnel.Device)
		if c.Tunnel.Device == AutoDevice {
			// Named after the profile (the config file), which status and
			// down find with -c, before the device has a name.
			c.Admin.Socket = DefaultSocket(Profile(c.Path))
		}
	}
	if c.Reconnect.MinDelay == 0 {
		c.Reconnect.MinDelay = 500 * time.Millisecond
	}
	if c.Reconnect.MaxDelay == 0 {
		c.Reconnect.MaxDelay = 30 * time.Second
	}
	if c.Reconnect.MinDelay <= 0 || c.Reconnect.MaxDelay < c.Reconnect.MinDelay {
		return errors.New("keys \"reconnect.min_delay\"/\"reconnect.max_delay\": need 0 < min_delay <= max_delay")
	}
	switch c.Transport.Mode {
	case "":
		c.Transport.Mode = TransportAuto
	case TransportAuto, TransportQUIC, TransportTLS:
	default:
		return fmt.Errorf("key \"transport.mode\": %q is not \"auto\", \"quic\" or \"tls\"", c.Transport.Mode)
	}
	if c.Transport.FallbackAfter == 0 {
		c.Transport.FallbackAfter = time.Second
	}
	if c.Transport.RetryUDP == 0 {
		c.Transport.RetryUDP = 2 * time.Minute
	}
	if c.Transport.FallbackAfter < 0 || c.Transport.RetryUDP < 0 {
		return errors.New("keys \"transport.fallback_after\"/\"transport.retry_udp\": must be positive")
	}
	if c.Reconnect.RefusedDelay == 0 {
		c.Reconnect.RefusedDelay = 5 * time.Minute
	}
	if c.Reconnect.RefusedDelay < 0 {
		return fmt.Errorf("key \"reconnect.refused_delay\": %v is negative", c.Reconnect.RefusedDelay)
	}
	return nil
}

// certSource says where the device certificate comes from, for messages:
// "tls.cert /path" or "tls.cert_pem in /path/acme.toml".
func (c *Config) certSource() string {
	if c.TLS.Cert != "" {
		return "tls.cert " + c.TLS.Cert
	}
	if c.Path == "" {
		return "tls.cert_pem"
	}
	return "tls.cert_pem in " + c.Path
}

// material is the loaded TLS identity and trust anchors.
type material struct {
	cert    tls.Certificate
	keyKind hwkey.Kind // where the device key lives
	keyAt   string     // ... in words, for status
	closer  io.Closer  // the hardware key's device or token; nil for a file
	leaf    *x509.Certificate
	cas     []*x509.Certificate // tls.ca as loaded (a renewal may bring the next bundle)
	roots   *x509.CertPool
	pin     string
	srvName string
	// keySet are the profile's [tls] settings naming this key (key_pem,
	// key_tpm or key_pkcs11 and its value), as the profile held them when
	// this pair was loaded or a renewal wrote it: what a later renewal
	// keeps aside with the certificate (previousFile).
	keySet map[string]string
}

func readPEM(file, inline, what string) ([]byte, error) {
	if inline != "" {
		return []byte(strings.TrimSpace(inline) + "\n"), nil
	}
	b, err := pki.ReadPEMFile(file)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, file, userfile.Cause(err))
	}
	return b, nil
}

func (c *Config) loadMaterial() (*material, error) {
	caPEM, err := readPEM(c.TLS.CA, c.TLS.CAPEM, "tls.ca")
	if err != nil {
		return nil, err
	}
	cas, err := pki.ParseCertificatesPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("parse tls.ca: %w", err)
	}
	certPEM, err := readPEM(c.TLS.Cert, c.TLS.CertPEM, "tls.cert")
	if err != nil {
		return nil, err
	}
	if ref := c.TLS.hardwareKey(); ref.Kind() != hwkey.KindFile {
		return c.hardwareMaterial(ref, cas, certPEM)
	}
	keyPEM, err := readPEM(c.TLS.Key, c.TLS.KeyPEM, "tls.key")
	if err != nil {
		return nil, err
	}
	// The device key, in its own file or inline in the config, must not be
	// readable by anyone but its owner (like OpenSSH's key check).
	keyFile := c.TLS.Key
	if keyFile == "" {
		keyFile = c.Path
	}
	if fi, err := os.Stat(keyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("device key in %s is readable by group or others (mode %v): run chmod 600 %s", keyFile, fi.Mode().Perm(), keyFile)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load device certificate and key: %w", err)
	}
	return &material{cert: cert, leaf: cert.Leaf, cas: cas, roots: pki.NewPool(cas), pin: c.TLS.PinSHA256, srvName: c.ServerName,
		keyKind: hwkey.KindFile, keyAt: keyWhere(c.TLS.Key, c.Path), keySet: c.TLS.keySettings()}, nil
}

// keyWhere says where a key file lives: its own file, or inline (key_pem)
// in the profile.
func keyWhere(keyFile, profile string) string {
	switch {
	case keyFile != "":
		return "file " + keyFile
	case profile != "":
		return "inline (key_pem) in " + profile
	}
	return "inline (key_pem)"
}

// hardwareMaterial opens the device key in the TPM or the token and pairs
// it with the certificate, which must be for that key.
func (c *Config) hardwareMaterial(ref hwkey.Ref, cas []*x509.Certificate, certPEM []byte) (*material, error) {
	chain, err := pki.ParseCertificatesPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("parse tls.cert: %w", err)
	}
	key, err := hwkey.Open(ref)
	if err != nil {
		return nil, fmt.Errorf("device key: %w", err)
	}
	pub, ok := chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		key.Close()
		return nil, fmt.Errorf("the device certificate (%s) is not for the key in %s: was it issued for this device's CSR?", pki.NameString(chain[0].Subject), key.Where())
	}
	cert := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return &material{cert: cert, leaf: chain[0], cas: cas, roots: pki.NewPool(cas), pin: c.TLS.PinSHA256, srvName: c.ServerName,
		keyKind: ref.Kind(), keyAt: key.Where(), closer: key, keySet: c.TLS.keySettings()}, nil
}
