package client

// Why the laptop is not connected, in words an employee understands.
//
// The gateway refuses a device whose chain does not verify with the TLS
// alert bad_certificate (certificate_required when it sent none). A device
// that chains to a trusted CA but is not welcome completes TLS and gets one
// Close frame whose reason is a code (revoked, no-policy, ...); a live
// session can be closed the same way (kicked, replaced, ...). classify maps
// each of these, and the laptop's own failures (gateway certificate refused,
// pin mismatch, gateway silent), to one sentence and to a backoff class:
// permanent refusals need an admin, so the client waits
// reconnect.refused_delay instead of hammering the gateway.

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// Codes that are not gateway close reasons.
const (
	codeBadCert      = "bad-certificate" // TLS alert bad_certificate
	codeCertRequired = "cert-required"   // TLS alert certificate_required
	codeGatewayCert  = "gateway-cert"    // the laptop refused the gateway's certificate
	codePin          = "pin-mismatch"    // ... because it is not the pinned one
	codeSilent       = "gateway-silent"  // no frame from the gateway within its timeout
	codeUnknown      = "gateway-closed"  // a close reason this client does not know
	codeAccessDenied = "access-denied"   // TLS alert access_denied
	codeNetwork      = ""                // anything else: network trouble, not shown as a refusal
)

// refusal is a classified reason for not being connected.
type refusal struct {
	Code      string // vocabulary code, or one of the codes above
	Message   string // one plain sentence for the employee
	Permanent bool   // needs an admin: back off to reconnect.refused_delay
}

// refusals is the shared vocabulary (tunnel.Reasons: the gateway's close
// and refusal reasons with their sentences) and the laptop's own codes;
// docs/laptop.md "Refusals" and docs/trust.md list them.
var refusals = func() map[string]refusal {
	m := map[string]refusal{
		codeBadCert:      {Message: "refused: the gateway does not accept this device's certificate (not issued by an authority it trusts) — contact your admin", Permanent: true},
		codeCertRequired: {Message: "refused: the gateway got no device certificate from this laptop — contact your admin", Permanent: true},
		codeAccessDenied: {Message: "refused: the gateway denies this device access — contact your admin", Permanent: true},
		codeGatewayCert:  {Message: "not connected: the gateway's certificate was not accepted (possibly a network that intercepts traffic) — retrying; tell your admin if this lasts"},
		codePin:          {Message: "not connected: the gateway's certificate is not the pinned one (tls.pin_sha256) — retrying; tell your admin if this lasts"},
		codeSilent:       {Message: "disconnected: the gateway stopped answering — retrying"},
	}
	for _, ri := range tunnel.Reasons {
		if ri.Sentence != "" {
			m[string(ri.Reason)] = refusal{Message: ri.Sentence, Permanent: ri.Permanent}
		}
	}
	return m
}()

// TLS alerts a gateway may send instead of a Close frame (RFC 8446 6.2).
var alertCodes = map[uint8]string{
	42:  codeBadCert,
	44:  string(tunnel.ReasonRevoked),
	45:  string(tunnel.ReasonExpired),
	48:  codeBadCert, // a gateway verifying with ClientCAs sends unknown_ca
	49:  codeAccessDenied,
	116: codeCertRequired,
}

// closeError is a Close frame from the gateway.
type closeError struct{ reason string }

func (e *closeError) Error() string {
	if e.reason == "" {
		return "gateway closed the session"
	}
	return "gateway closed the session: " + clean(e.reason, 64)
}

// errGatewaySilent ends a session whose gateway sent nothing within the
// pushed timeout.
var errGatewaySilent = errors.New("gateway silent for longer than its timeout")

// classify maps a session error to a refusal; Code is "" for plain network
// trouble (dial failures, resets), which keeps the normal backoff and no
// message.
func classify(err error) refusal {
	var ce *closeError
	var gce *gatewayCertError
	var cve *tls.CertificateVerificationError
	switch {
	case err == nil:
		return refusal{}
	case errors.As(err, &ce):
		if r, ok := refusals[ce.reason]; ok {
			r.Code = ce.reason
			return r
		}
		return refusal{Code: codeUnknown, Message: fmt.Sprintf("disconnected by the gateway (reason %q) — retrying", clean(ce.reason, 64))}
	case errors.Is(err, errPinMismatch):
		return known(codePin)
	case errors.As(err, &gce), errors.As(err, &cve):
		// The generic sentence, made specific: which name, which CA, which
		// date (trust.go).
		r := known(codeGatewayCert)
		if why := gatewayCertCause(err, time.Now()); why != "" {
			r.Message = "not connected: " + why + " — retrying; tell your admin if this lasts"
		}
		return r
	case errors.Is(err, errGatewaySilent):
		return known(codeSilent)
	}
	if a, ok := tunnel.RemoteAlert(err); ok {
		if code, ok := alertCodes[a]; ok {
			return known(code)
		}
	}
	return refusal{Code: codeNetwork}
}

func known(code string) refusal {
	r := refusals[code]
	r.Code = code
	return r
}
