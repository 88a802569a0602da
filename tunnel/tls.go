package tunnel

import (
	"crypto/tls"
	"errors"
	"net"
	"reflect"
	"slices"
)

// TLSDefaults applies the settings both ends of a sallyport session use to
// c: TLS 1.3 only, ALPN "sallyport/1" (added to NextProtos if missing),
// dynamic record sizing off (full 16 KiB records from the first byte: the
// relay writes whole batches, so small warm-up records only cost CPU), and
// key exchange preferences when c has none. Certificates, verification and
// ClientAuth stay the caller's.
//
// Cipher suite order: it cannot be set for TLS 1.3 in Go. The crypto/tls
// docs say Config.CipherSuites lists "enabled TLS 1.0–1.2 cipher suites.
// The order of the list is ignored. Note that TLS 1.3 ciphersuites are not
// configurable." (checked against Go 1.26 crypto/tls/common.go). Instead
// the client offers TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384,
// TLS_CHACHA20_POLY1305_SHA256 in that order when the CPU has AES-GCM
// hardware support (AES-NI + PCLMULQDQ on amd64), ChaCha20 first otherwise
// (defaults.go, handshake_client.go); the server keeps AES-GCM first only
// when it has that hardware too and the client listed an AES-GCM suite first
// (isAESGCMPreferred, since Go 1.16, golang/go#41181). So between two
// machines with AES-NI a session negotiates AES-128-GCM by itself, which is
// what ARCHITECTURE.md asks for; a connection's ConnectionState().CipherSuite
// shows the result.
func TLSDefaults(c *tls.Config) {
	c.MinVersion = tls.VersionTLS13
	if c.MaxVersion != 0 && c.MaxVersion < tls.VersionTLS13 {
		c.MaxVersion = 0
	}
	if !slices.Contains(c.NextProtos, ALPN) {
		c.NextProtos = append(c.NextProtos, ALPN)
	}
	c.DynamicRecordSizingDisabled = true
	if c.CurvePreferences == nil {
		// Hybrid post-quantum first (the Go default leader), then the
		// fast classical curves; no P-384/P-521.
		c.CurvePreferences = []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256}
	}
}

// RemoteAlert returns the TLS alert the peer sent, if err is one (RFC 8446
// 6.2: 42 bad_certificate, 48 unknown_ca, ...). crypto/tls reports it as a
// net.OpError "remote error" around its unexported alert type (a uint8).
func RemoteAlert(err error) (uint8, bool) {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "remote error" || op.Err == nil {
		return 0, false
	}
	if v := reflect.ValueOf(op.Err); v.Kind() == reflect.Uint8 {
		return uint8(v.Uint()), true
	}
	return 0, false
}
