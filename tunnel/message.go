package tunnel

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// Limits on control messages. Unknown JSON fields are ignored (so newer
// peers can add some), but every known field is bounded and validated.
const (
	MaxCaps          = 64   // capabilities in Hello/Config
	MaxCapLen        = 64   // bytes per capability name
	MaxSoftwareLen   = 256  // Hello.Software
	MaxRoutes        = 4096 // Config.Routes
	MaxDNS           = 16   // Config.DNS
	MaxSearchDomains = 32   // Config.SearchDomains
	MaxReasonLen     = 1024 // CloseMsg.Reason
	MinMTU           = 576
	MaxMTU           = 65535
	MaxKeepalive     = time.Hour
	MaxTimeout       = 24 * time.Hour
	// Renewal messages (FrameRenew, FrameRenewed).
	MaxRenewCSR     = 8 << 10  // RenewRequest.CSR, DER (pki.MaxRenewalRequest)
	MaxAttestation  = 16 << 10 // RenewRequest.Attestation
	MaxRenewCerts   = 8        // RenewReply.Certs: the leaf and its issuers
	MaxRenewCAs     = 16       // RenewReply.CAs
	MaxRenewCertLen = 16 << 10 // one DER certificate
	MaxRetryAfter   = 24 * time.Hour
	MinRenewAt      = 0.1 // Config.RenewAt, a fraction of a certificate's lifetime
	MaxRenewAt      = 0.95
)

// Hello is the client's first frame: protocol version and capabilities.
type Hello struct {
	Version  int      `json:"version"`
	Caps     []string `json:"caps,omitempty"`
	Software string   `json:"software,omitempty"`
}

// Config is the server's answer to Hello: the device's tunnel settings.
// Keepalive and Timeout are encoded as Go duration strings ("25s"); a JSON
// number is accepted as seconds.
type Config struct {
	Version int          `json:"version"`
	Caps    []string     `json:"caps,omitempty"`
	Address netip.Prefix `json:"address"` // device address with pool prefix length, e.g. 10.8.0.2/24
	Gateway netip.Addr   `json:"gateway"` // gateway's tunnel address; may be zero
	// Address6 is the device's IPv6 tunnel address with the pool's prefix
	// length when the gateway is dual stack (Address is then IPv4). A
	// v6-only gateway puts its one address in Address instead. Older
	// clients ignore the field and run IPv4 only.
	Address6 netip.Prefix `json:"address6,omitzero"`
	// Gateway6 is the gateway's IPv6 tunnel address; may be zero.
	Gateway6      netip.Addr     `json:"gateway6,omitzero"`
	Routes        []netip.Prefix `json:"routes,omitempty"`
	DNS           []netip.Addr   `json:"dns,omitempty"`
	SearchDomains []string       `json:"search_domains,omitempty"`
	MTU           int            `json:"mtu"`
	Keepalive     time.Duration  `json:"keepalive"` // send a keepalive after this much idle time; 0 = never
	Timeout       time.Duration  `json:"timeout"`   // drop the peer after this much silence; 0 = never
	// KillSwitch, when set, is the gateway's word on the laptop's kill
	// switch (client/killswitch.go): true switches it on whatever the
	// laptop's file says; absent leaves it to the laptop (on for a full
	// tunnel).
	KillSwitch *bool `json:"kill_switch,omitempty"`
	// RenewAt is, when CapRenew was negotiated, the fraction of its
	// certificate's lifetime at which the laptop asks for a new one
	// (MinRenewAt..MaxRenewAt; the laptop adds jitter). Zero otherwise.
	RenewAt float64 `json:"renew_at,omitempty"`
}

// Addresses returns the device's tunnel addresses: Address, then Address6
// when set.
func (c Config) Addresses() []netip.Prefix {
	if c.Address6.IsValid() {
		return []netip.Prefix{c.Address, c.Address6}
	}
	return []netip.Prefix{c.Address}
}

// CloseMsg is the payload of a Close frame.
type CloseMsg struct {
	Reason string `json:"reason"`
}

// HasCap reports whether caps contains c.
func HasCap(caps []string, c string) bool {
	for _, x := range caps {
		if x == c {
			return true
		}
	}
	return false
}

// configAlias has Config's fields without its methods.
type configAlias Config

// MarshalJSON encodes durations as strings.
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		configAlias
		Keepalive string `json:"keepalive"`
		Timeout   string `json:"timeout"`
	}{configAlias(c), c.Keepalive.String(), c.Timeout.String()})
}

// UnmarshalJSON decodes durations given as strings or as seconds.
func (c *Config) UnmarshalJSON(b []byte) error {
	var v struct {
		configAlias
		Keepalive json.RawMessage `json:"keepalive"`
		Timeout   json.RawMessage `json:"timeout"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	ka, err := parseDuration(v.Keepalive)
	if err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	to, err := parseDuration(v.Timeout)
	if err != nil {
		return fmt.Errorf("timeout: %w", err)
	}
	*c = Config(v.configAlias)
	c.Keepalive, c.Timeout = ka, to
	return nil
}

func parseDuration(raw json.RawMessage) (time.Duration, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, err
		}
		return d, nil
	}
	secs, err := strconv.ParseFloat(string(raw), 64)
	if err != nil {
		return 0, fmt.Errorf("not a duration string or number of seconds: %.32q", raw)
	}
	if secs < 0 || secs > MaxTimeout.Seconds() {
		return 0, fmt.Errorf("%v seconds out of range", secs)
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// EncodeHello validates h and returns its JSON encoding.
func EncodeHello(h Hello) ([]byte, error) {
	if err := h.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(h)
}

// DecodeHello parses and validates a Hello payload.
func DecodeHello(b []byte) (Hello, error) {
	var h Hello
	if err := decodeJSON("hello", b, &h); err != nil {
		return Hello{}, err
	}
	if err := h.Validate(); err != nil {
		return Hello{}, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if len(h.Caps) == 0 {
		h.Caps = nil
	}
	return h, nil
}

// Validate checks h's fields against the protocol limits.
func (h Hello) Validate() error {
	if h.Version < 1 {
		return fmt.Errorf("hello: version %d invalid", h.Version)
	}
	if err := validateCaps(h.Caps); err != nil {
		return fmt.Errorf("hello: %w", err)
	}
	if len(h.Software) > MaxSoftwareLen || !printable(h.Software) {
		return fmt.Errorf("hello: software %.64q invalid (printable ASCII, at most %d bytes)", h.Software, MaxSoftwareLen)
	}
	return nil
}

// EncodeConfig validates c and returns its JSON encoding.
func EncodeConfig(c Config) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(c)
}

// DecodeConfig parses and validates a Config payload. Routes are returned
// in canonical (masked) form.
func DecodeConfig(b []byte) (Config, error) {
	var c Config
	if err := decodeJSON("config", b, &c); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	for i, r := range c.Routes {
		c.Routes[i] = r.Masked()
	}
	// Empty lists decode as nil so decode(encode(c)) == c.
	if len(c.Caps) == 0 {
		c.Caps = nil
	}
	if len(c.Routes) == 0 {
		c.Routes = nil
	}
	if len(c.DNS) == 0 {
		c.DNS = nil
	}
	if len(c.SearchDomains) == 0 {
		c.SearchDomains = nil
	}
	return c, nil
}

// Validate checks c's fields: version, a usable unicast address, gateway of
// the same family, bounded lists of valid routes/resolvers/search domains,
// MTU in MinMTU..MaxMTU (1280.. for IPv6) and sane keepalive/timeout.
func (c Config) Validate() error {
	if c.Version < 1 {
		return fmt.Errorf("config: version %d invalid", c.Version)
	}
	if err := validateCaps(c.Caps); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	a := c.Address.Addr()
	if !c.Address.IsValid() || a.Zone() != "" || c.Address.Bits() == 0 {
		return fmt.Errorf("config: address %q invalid", c.Address)
	}
	if !a.IsGlobalUnicast() && !a.IsPrivate() {
		return fmt.Errorf("config: address %s is not a unicast address", c.Address)
	}
	if c.Gateway.IsValid() {
		if c.Gateway.Is4() != a.Is4() || c.Gateway.Zone() != "" {
			return fmt.Errorf("config: gateway %s does not match address family of %s", c.Gateway, c.Address)
		}
		if c.Gateway == a {
			return fmt.Errorf("config: gateway %s equals device address", c.Gateway)
		}
	}
	if c.Address6.IsValid() || c.Gateway6.IsValid() {
		if err := c.validate6(); err != nil {
			return err
		}
	}
	if len(c.Routes) > MaxRoutes {
		return fmt.Errorf("config: %d routes exceed maximum %d", len(c.Routes), MaxRoutes)
	}
	for _, r := range c.Routes {
		if !r.IsValid() || r.Addr().Zone() != "" {
			return fmt.Errorf("config: route %q invalid", r)
		}
	}
	if len(c.DNS) > MaxDNS {
		return fmt.Errorf("config: %d DNS servers exceed maximum %d", len(c.DNS), MaxDNS)
	}
	for _, d := range c.DNS {
		if !d.IsValid() || d.IsUnspecified() || d.IsMulticast() {
			return fmt.Errorf("config: DNS server %q invalid", d)
		}
	}
	if len(c.SearchDomains) > MaxSearchDomains {
		return fmt.Errorf("config: %d search domains exceed maximum %d", len(c.SearchDomains), MaxSearchDomains)
	}
	for _, d := range c.SearchDomains {
		if !validDomain(d) {
			return fmt.Errorf("config: search domain %.64q invalid", d)
		}
	}
	minMTU := MinMTU
	if a.Is6() || c.Address6.IsValid() {
		minMTU = 1280
	}
	if c.MTU < minMTU || c.MTU > MaxMTU {
		return fmt.Errorf("config: MTU %d out of range %d..%d", c.MTU, minMTU, MaxMTU)
	}
	if c.Keepalive < 0 || c.Keepalive > MaxKeepalive {
		return fmt.Errorf("config: keepalive %v out of range 0..%v", c.Keepalive, MaxKeepalive)
	}
	if c.Timeout < 0 || c.Timeout > MaxTimeout {
		return fmt.Errorf("config: timeout %v out of range 0..%v", c.Timeout, MaxTimeout)
	}
	if c.Timeout > 0 && c.Keepalive > 0 && c.Timeout <= c.Keepalive {
		return fmt.Errorf("config: timeout %v must exceed keepalive %v", c.Timeout, c.Keepalive)
	}
	if c.RenewAt != 0 && !(c.RenewAt >= MinRenewAt && c.RenewAt <= MaxRenewAt) {
		return fmt.Errorf("config: renew_at %v out of range %v..%v", c.RenewAt, MinRenewAt, MaxRenewAt)
	}
	return nil
}

// validate6 checks the dual-stack fields: Address6 is an IPv6 unicast
// prefix beside an IPv4 Address, Gateway6 (optional) is another IPv6 address.
func (c Config) validate6() error {
	a6 := c.Address6.Addr()
	if !c.Address6.IsValid() || !a6.Is6() || a6.Is4In6() || a6.Zone() != "" || c.Address6.Bits() == 0 {
		return fmt.Errorf("config: address6 %q invalid (an IPv6 prefix is required when gateway6 is set)", c.Address6)
	}
	if !a6.IsGlobalUnicast() && !a6.IsPrivate() {
		return fmt.Errorf("config: address6 %s is not a unicast address", c.Address6)
	}
	if !c.Address.Addr().Is4() {
		return fmt.Errorf("config: address6 %s given beside non-IPv4 address %s", c.Address6, c.Address)
	}
	if c.Gateway6.IsValid() {
		if !c.Gateway6.Is6() || c.Gateway6.Is4In6() || c.Gateway6.Zone() != "" {
			return fmt.Errorf("config: gateway6 %s is not an IPv6 address", c.Gateway6)
		}
		if c.Gateway6 == a6 {
			return fmt.Errorf("config: gateway6 %s equals device address", c.Gateway6)
		}
	}
	return nil
}

// EncodeClose returns the JSON encoding of m (reason truncated to
// MaxReasonLen bytes).
func EncodeClose(m CloseMsg) ([]byte, error) {
	if len(m.Reason) > MaxReasonLen {
		m.Reason = m.Reason[:MaxReasonLen]
	}
	return json.Marshal(m)
}

// DecodeClose parses a Close payload. An empty payload is a Close with no
// reason.
func DecodeClose(b []byte) (CloseMsg, error) {
	var m CloseMsg
	if len(bytes.TrimSpace(b)) == 0 {
		return m, nil
	}
	if err := decodeJSON("close", b, &m); err != nil {
		return CloseMsg{}, err
	}
	if len(m.Reason) > MaxReasonLen {
		return CloseMsg{}, fmt.Errorf("%w: close reason of %d bytes exceeds %d", ErrProtocol, len(m.Reason), MaxReasonLen)
	}
	return m, nil
}

// Certificate renewal inside the session (ARCHITECTURE.md, "Renewal").
// After both ends negotiated CapRenew the laptop may send a FrameRenew with
// a RenewRequest; the gateway answers each with one FrameRenewed carrying a
// RenewReply: the new certificate chain, or the reason it is refused.

// FrameRenew carries a JSON RenewRequest, laptop -> gateway; only after
// both ends negotiated CapRenew.
const FrameRenew byte = 0x15

// FrameRenewed carries a JSON RenewReply, gateway -> laptop: the answer
// to one FrameRenew.
const FrameRenewed byte = 0x16

// CapRenew is the hello/config capability for renewal.
const CapRenew = "renew"

// RenewRequest asks for a new device certificate.
type RenewRequest struct {
	// CSR is a DER PKCS#10 request signed by the new key and bound to this
	// session (pki.NewRenewalRequest); the gateway uses only its key.
	CSR []byte `json:"csr"`
	// Attestation, optional, is evidence from the device's hardware that
	// the new key was made in it (a TPM's certification of the key by its
	// attestation key), for a gateway that renews hardware-held keys
	// keeping their key origin. Opaque here; a gateway that does not
	// verify it renews as for a key file.
	Attestation []byte `json:"attestation,omitempty"`
}

// RenewReply answers one RenewRequest: Certs on success, Reason otherwise.
type RenewReply struct {
	// Certs is the new certificate chain, DER, leaf first.
	Certs [][]byte `json:"certs,omitempty"`
	// CAs, when set beside Certs, is the CA bundle (DER) the laptop trusts
	// for the gateway from now on (renewal.ca_bundle): how a laptop learns
	// the next CA during a rotation.
	CAs [][]byte `json:"cas,omitempty"`
	// Reason is why the renewal was refused: a word of the refusal
	// vocabulary (revoked, expired, crl-stale, ...) or one of renewal's own.
	Reason string `json:"reason,omitempty"`
	// RetryAfter is, with Reason, how many seconds to wait before asking
	// again (0: the laptop's own schedule).
	RetryAfter int `json:"retry_after,omitempty"`
}

// EncodeRenewRequest validates r and returns its JSON encoding.
func EncodeRenewRequest(r RenewRequest) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(r)
}

// DecodeRenewRequest parses and validates a FrameRenew payload.
func DecodeRenewRequest(b []byte) (RenewRequest, error) {
	var r RenewRequest
	if err := decodeJSON("renew", b, &r); err != nil {
		return RenewRequest{}, err
	}
	if err := r.Validate(); err != nil {
		return RenewRequest{}, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if len(r.Attestation) == 0 {
		r.Attestation = nil
	}
	return r, nil
}

// Validate checks the request's sizes.
func (r RenewRequest) Validate() error {
	if len(r.CSR) == 0 || len(r.CSR) > MaxRenewCSR {
		return fmt.Errorf("renew: request of %d bytes (want 1..%d)", len(r.CSR), MaxRenewCSR)
	}
	if len(r.Attestation) > MaxAttestation {
		return fmt.Errorf("renew: attestation of %d bytes exceeds %d", len(r.Attestation), MaxAttestation)
	}
	return nil
}

// EncodeRenewReply validates r and returns its JSON encoding.
func EncodeRenewReply(r RenewReply) ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(r)
}

// DecodeRenewReply parses and validates a FrameRenewed payload.
func DecodeRenewReply(b []byte) (RenewReply, error) {
	var r RenewReply
	if err := decodeJSON("renewed", b, &r); err != nil {
		return RenewReply{}, err
	}
	if err := r.Validate(); err != nil {
		return RenewReply{}, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if len(r.CAs) == 0 {
		r.CAs = nil
	}
	return r, nil
}

// Validate checks that r is exactly one of a chain (with an optional CA
// bundle) or a refusal, within the limits.
func (r RenewReply) Validate() error {
	switch {
	case len(r.Certs) > 0 && r.Reason != "":
		return errors.New("renewed: both certificates and a refusal reason")
	case len(r.Certs) == 0 && r.Reason == "":
		return errors.New("renewed: neither certificates nor a refusal reason")
	case len(r.Certs) == 0 && len(r.CAs) > 0:
		return errors.New("renewed: a CA bundle without certificates")
	case len(r.Certs) > MaxRenewCerts:
		return fmt.Errorf("renewed: %d certificates exceed maximum %d", len(r.Certs), MaxRenewCerts)
	case len(r.CAs) > MaxRenewCAs:
		return fmt.Errorf("renewed: %d CA certificates exceed maximum %d", len(r.CAs), MaxRenewCAs)
	case len(r.Reason) > MaxReasonLen || !printable(r.Reason):
		return fmt.Errorf("renewed: reason %.64q invalid (printable ASCII, at most %d bytes)", r.Reason, MaxReasonLen)
	case r.RetryAfter < 0 || r.RetryAfter > int(MaxRetryAfter/time.Second) || r.RetryAfter > 0 && r.Reason == "":
		return fmt.Errorf("renewed: retry_after %d invalid", r.RetryAfter)
	}
	for _, list := range [][][]byte{r.Certs, r.CAs} {
		for _, c := range list {
			if len(c) == 0 || len(c) > MaxRenewCertLen {
				return fmt.Errorf("renewed: certificate of %d bytes (want 1..%d)", len(c), MaxRenewCertLen)
			}
		}
	}
	return nil
}

func decodeJSON(what string, b []byte, v any) error {
	if len(b) > MaxPayload {
		return fmt.Errorf("%w: %s message of %d bytes exceeds %d", ErrProtocol, what, len(b), MaxPayload)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: decode %s: %w", ErrProtocol, what, err)
	}
	return nil
}

func validateCaps(caps []string) error {
	if len(caps) > MaxCaps {
		return fmt.Errorf("%d capabilities exceed maximum %d", len(caps), MaxCaps)
	}
	for _, c := range caps {
		if c == "" || len(c) > MaxCapLen || !printable(c) {
			return fmt.Errorf("capability %.64q invalid", c)
		}
	}
	return nil
}

// printable reports whether s is printable ASCII (space through '~').
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// validDomain accepts DNS names: 1..253 bytes of labels of 1..63
// letters, digits, '-' or '_', separated by dots (one trailing dot allowed).
func validDomain(s string) bool {
	if len(s) > 0 && s[len(s)-1] == '.' {
		s = s[:len(s)-1]
	}
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case ch == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9', ch == '-', ch == '_':
		default:
			return false
		}
		label++
		if label > 63 {
			return false
		}
	}
	return label > 0
}
