package tunnel

// The one vocabulary of why: why a relay dropped a packet (DropReason) and
// why a session was refused or closed (Reason, the code a Close frame
// carries). The gateway's counters, `server status`, the Prometheus labels,
// the drop log, the laptop's status and the sentences the laptop shows are
// all generated from the two tables below; no other file types these words.

import "sync/atomic"

// DropReason says why a relay dropped a packet; Accept means it did not.
type DropReason uint8

// Drop reasons. The names (String) are the words of `server status`, the
// metrics' reason label and the drop log.
const (
	Accept         DropReason = iota // not dropped
	DropSpoofed                      // source is not one of the device's tunnel addresses
	DropPolicy                       // no policy allows it, or the device's flow table is full
	DropNoFlow                       // from the network, not a reply to a flow the device opened
	DropQueueFull                    // the device's queue was full (a slow device)
	DropMalformed                    // unparsable packet or a virtio-net header that does not describe it
	DropCongestion                   // dropped on purpose: the relay fell behind the stream (AQM)
	DropOffline                      // the laptop had no session when the packet was read
	DropQuiet                        // the laptop kernel's IPv6 link-local chatter (ND, MLD): dropped, not counted
	numDropReasons
)

var dropNames = [numDropReasons]string{
	Accept:         "accept",
	DropSpoofed:    "spoofed",
	DropPolicy:     "policy",
	DropNoFlow:     "no_flow",
	DropQueueFull:  "queue_full",
	DropMalformed:  "malformed",
	DropCongestion: "congestion",
	DropOffline:    "offline",
	DropQuiet:      "quiet",
}

// String is the reason's word ("spoofed", "no_flow", ...).
func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return "unknown"
}

// GatewayDrops are the reasons the gateway counts per device, in the order
// `server status` shows them.
var GatewayDrops = []DropReason{DropSpoofed, DropPolicy, DropNoFlow, DropQueueFull, DropMalformed, DropCongestion}

// LaptopDrops are the reasons the laptop counts.
var LaptopDrops = []DropReason{DropCongestion, DropOffline, DropMalformed}

// DropCounts counts dropped packets by reason; safe for concurrent use.
// Accept and DropQuiet are never counted.
type DropCounts [numDropReasons]atomic.Uint64

// Add counts n packets dropped for r.
func (c *DropCounts) Add(r DropReason, n uint64) {
	if r != Accept && r != DropQuiet && r < numDropReasons {
		c[r].Add(n)
	}
}

// Load returns the count for r.
func (c *DropCounts) Load(r DropReason) uint64 {
	if r >= numDropReasons {
		return 0
	}
	return c[r].Load()
}

// Map returns the counts of reasons keyed by their words.
func (c *DropCounts) Map(reasons []DropReason) map[string]uint64 {
	m := make(map[string]uint64, len(reasons))
	for _, r := range reasons {
		m[r.String()] = c.Load(r)
	}
	return m
}

// Reason is why a session was refused or closed: the Close frame's code
// (CloseMsg.Reason), the reason= of the gateway's log lines, the key of
// `server status` refused counts and of the closed-session metrics.
type Reason string

// Refusal and close reasons.
const (
	ReasonUnknownCA      Reason = "unknown-ca"            // chain does not verify against the CA in force
	ReasonRevoked        Reason = "revoked"               // a certificate of the chain is on the CRL
	ReasonExpired        Reason = "expired"               // a certificate of the chain is outside its validity
	ReasonBadEKU         Reason = "bad-eku"               // the leaf is not made for clientAuth
	ReasonCALeaf         Reason = "ca-leaf"               // the leaf is a CA certificate
	ReasonNoCert         Reason = "no-cert"               // the device sent no certificate
	ReasonNoPolicy       Reason = "no-policy"             // no policy matches the device
	ReasonNotAllowlisted Reason = "not-allowlisted"       // not in tls.allow_fingerprints / allow_subjects
	ReasonHardwareKey    Reason = "hardware-key-required" // a matching policy demands a key in hardware; the certificate does not say so
	ReasonCRLStale       Reason = "crl-stale"             // the CRL in force is past its nextUpdate (tls.crl_stale = "refuse")
	ReasonHandshake      Reason = "handshake-failed"      // TLS handshake failed otherwise
	ReasonDuplicate      Reason = "duplicate-device"      // one certificate flapping between two machines
	ReasonPoolExhausted  Reason = "pool-exhausted"        // no free tunnel address
	ReasonCapacity       Reason = "capacity"              // tunnel.max_sessions reached
	ReasonOverload       Reason = "handshakes-full"       // tls.max_handshakes reached, every slot past its ClientHello: closed before TLS
	// Pre-authentication limits (server/preauth.go): connections closed
	// before their TLS ClientHello was read.
	ReasonFirstByteTimeout Reason = "first-byte-timeout" // nothing received within tls.first_byte_timeout
	ReasonHelloTimeout     Reason = "hello-timeout"      // ClientHello not complete within tls.hello_timeout
	ReasonPerSource        Reason = "per-source-limit"   // the source holds tls.max_handshakes_per_source handshakes past their ClientHello
	ReasonEvicted          Reason = "evicted"            // closed before its ClientHello to make room for a newcomer
	ReasonReplaced         Reason = "replaced"           // the same device connected again
	ReasonKicked           Reason = "kicked"             // an admin ended the session
	ReasonTimeout          Reason = "timeout"            // nothing received for the session timeout
	ReasonStalled          Reason = "stalled"            // the device stopped reading
	ReasonShutdown         Reason = "shutdown"           // the gateway is stopping
	ReasonDrain            Reason = "drain"              // the gateway is being drained
	ReasonPeerClosed       Reason = "peer-closed"        // the device closed the stream
	ReasonError            Reason = "error"              // the stream failed
)

// Reasons a laptop gives in the Close frame it sends the gateway. The
// gateway logs them (debug) and ends the session as peer-closed; the
// laptop never receives them.
const (
	ReasonClientShutdown Reason = "client-shutdown" // the laptop's client is stopping (down, SIGTERM)
	ReasonClientReload   Reason = "client-reload"   // a reload changed what the session rests on; the laptop reconnects at once
)

// LaptopReasons are the reasons a laptop tells the gateway.
var LaptopReasons = []Reason{ReasonClientShutdown, ReasonClientReload}

// ReasonGatewayCert: the device refused the gateway's certificate (a
// certificate alert from it), so tls.cert, or the laptop's server_name or
// CA, is wrong, not the device's certificate.
const ReasonGatewayCert Reason = "gateway-cert-rejected"

// ReasonInfo describes one Reason.
type ReasonInfo struct {
	Reason Reason
	// Told: a session closed for this reason sends it in a Close frame
	// (not: the peer closed, the stream failed, the device does not read,
	// or the reason only ever refuses a handshake that did not complete).
	Told bool
	// Refusal: a reason to refuse a session (counted in `server status`
	// refused), as opposed to one that ends a live session.
	Refusal bool
	// Permanent: only an admin can fix it; the laptop waits
	// reconnect.refused_delay before trying again.
	Permanent bool
	// Sentence is what the laptop tells the employee ("" for reasons the
	// laptop never receives).
	Sentence string
}

// Reasons is the vocabulary, in the order the docs list it.
var Reasons = []ReasonInfo{
	{ReasonRevoked, true, true, true, "refused: this device's certificate was revoked — contact your admin"},
	{ReasonExpired, true, true, true, "refused: this device's certificate has expired — ask your admin for a new one"},
	{ReasonBadEKU, true, true, true, "refused: this device's certificate is not made for VPN clients (no clientAuth usage) — ask your admin for a new one"},
	{ReasonCALeaf, true, true, true, "refused: this device's certificate is a CA certificate, not a device certificate — ask your admin for a new one"},
	{ReasonNoPolicy, true, true, true, "refused: no access policy on the gateway matches this device — contact your admin"},
	{ReasonNotAllowlisted, true, true, true, "refused: this device is not on the gateway's allowlist — contact your admin"},
	{ReasonHardwareKey, true, true, true, "refused: your group must keep the device key in this laptop's TPM or a security token, and this device's certificate is for a key file — ask your admin to enroll this laptop with a hardware key"},
	{ReasonUnknownCA, true, true, true, "refused: the gateway no longer trusts the authority that issued this device's certificate — contact your admin"},
	{ReasonDuplicate, true, true, false, "refused: this device's certificate is in use on another computer right now — retrying; if that is not your other computer, tell your admin: the certificate may have been copied"},
	{ReasonCRLStale, true, true, false, "refused for now: the gateway's revocation list is out of date — retrying; tell your admin if this lasts"},
	{ReasonPoolExhausted, true, true, false, "refused for now: the gateway has no free tunnel address — retrying"},
	{ReasonCapacity, true, true, false, "refused for now: the gateway is at capacity — retrying"},
	{ReasonNoCert, false, true, false, ""},
	{ReasonHandshake, false, true, false, ""},
	{ReasonGatewayCert, false, true, false, ""}, // the laptop says it in its own words (client/trust.go)
	{ReasonOverload, false, true, false, ""},
	{ReasonFirstByteTimeout, false, true, false, ""},
	{ReasonHelloTimeout, false, true, false, ""},
	{ReasonPerSource, false, true, false, ""},
	{ReasonEvicted, false, true, false, ""},
	{ReasonReplaced, true, false, false, "disconnected: this device's certificate connected again, from here or from another computer — retrying"},
	{ReasonKicked, true, false, false, "disconnected: an admin ended this session — retrying"},
	{ReasonTimeout, true, false, false, "disconnected: the gateway heard nothing from this laptop for too long — retrying"},
	{ReasonStalled, false, false, false, "disconnected: this laptop stopped taking data from the gateway — retrying"},
	{ReasonShutdown, true, false, false, "disconnected: the gateway is shutting down — retrying"},
	{ReasonDrain, true, false, false, "disconnected: the gateway is being drained for maintenance — moving to the next gateway"},
	{ReasonPeerClosed, false, false, false, ""},
	{ReasonError, false, false, false, ""},
}

var reasonIndex = func() map[Reason]ReasonInfo {
	m := make(map[Reason]ReasonInfo, len(Reasons))
	for _, ri := range Reasons {
		m[ri.Reason] = ri
	}
	return m
}()

// LookupReason returns what the vocabulary says about code.
func LookupReason(code string) (ReasonInfo, bool) {
	ri, ok := reasonIndex[Reason(code)]
	return ri, ok
}

// Told reports whether the device is sent r in a Close frame.
func (r Reason) Told() bool { return reasonIndex[r].Told }

// Reasons a renewal is refused (RenewReply.Reason) beside the vocabulary's
// own (revoked, expired, crl-stale, ...). They never close a session: the
// laptop logs them and keeps its certificate until it renews or expires.
const (
	// ReasonRenewUnavailable: the gateway cannot renew this device now
	// (renewal not configured, the issuer expired, the device's CA is not
	// in renewal.ca_bundle, or the renewed certificate would itself be
	// refused).
	ReasonRenewUnavailable Reason = "renew-unavailable"
	// ReasonRenewInvalid: the request does not verify, is not bound to
	// this session, or its key is not accepted.
	ReasonRenewInvalid Reason = "renew-invalid"
	// ReasonRenewTooSoon: the device renewed a moment ago (on any session),
	// or this session is renewing.
	ReasonRenewTooSoon Reason = "renew-too-soon"
)
