package client

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/sallyport/sallyport/tunnel"
)

// Every code of the shared vocabulary has a sentence and the backoff
// class the brief gives it; an unknown or hostile reason is shown safely.
func TestClassify(t *testing.T) {
	permanent := []string{"revoked", "expired", "bad-eku", "ca-leaf", "no-policy", "not-allowlisted", "unknown-ca"}
	// duplicate-device: the certificate is in use elsewhere now; normal
	// backoff, so the laptop gets in once the other machine is gone.
	transient := []string{"crl-stale", "pool-exhausted", "capacity", "replaced", "kicked", "timeout", "stalled", "shutdown", "duplicate-device"}
	check := func(t *testing.T, err error, code string, perm bool) {
		t.Helper()
		r := classify(fmt.Errorf("gw:443: %w", err))
		if r.Code != code || r.Permanent != perm || (code != codeNetwork) != (r.Message != "") {
			t.Fatalf("classify(%v) = %+v, want code %q permanent %v", err, r, code, perm)
		}
		if perm && !strings.Contains(r.Message, "admin") {
			t.Fatalf("permanent refusal %q does not tell the employee to see the admin: %q", code, r.Message)
		}
		if !perm && code != codeNetwork && !strings.Contains(r.Message, "retrying") {
			t.Fatalf("transient %q does not say it retries: %q", code, r.Message)
		}
	}
	for _, code := range permanent {
		t.Run(code, func(t *testing.T) { check(t, &closeError{reason: code}, code, true) })
	}
	for _, code := range transient {
		t.Run(code, func(t *testing.T) { check(t, &closeError{reason: code}, code, false) })
	}
	t.Run("silent", func(t *testing.T) { check(t, errGatewaySilent, codeSilent, false) })
	t.Run("pin", func(t *testing.T) { check(t, &gatewayCertError{msg: "x", err: errPinMismatch}, codePin, false) })
	t.Run("gateway cert", func(t *testing.T) { check(t, &gatewayCertError{msg: "x"}, codeGatewayCert, false) })
	t.Run("network", func(t *testing.T) { check(t, io.ErrUnexpectedEOF, codeNetwork, false) })
	t.Run("nil", func(t *testing.T) {
		if r := classify(nil); r != (refusal{}) {
			t.Fatalf("classify(nil) = %+v", r)
		}
	})
	t.Run("unknown reason", func(t *testing.T) {
		evil := "evil\x1b[2J\nreason" + strings.Repeat("x", 200)
		r := classify(&closeError{reason: evil})
		if r.Code != codeUnknown || r.Permanent || strings.ContainsAny(r.Message, "\x1b\n") || len(r.Message) > 160 {
			t.Fatalf("hostile reason shown as %+v", r)
		}
		if e := (&closeError{reason: evil}).Error(); strings.ContainsAny(e, "\x1b\n") {
			t.Fatalf("hostile reason in error text: %q", e)
		}
	})
	if !errors.Is(fmt.Errorf("x: %w", &gatewayCertError{err: errPinMismatch}), errPinMismatch) {
		t.Fatal("pin error does not unwrap")
	}
}

// A Close frame is untrusted bytes from the network: whatever it holds,
// the error text and the sentence shown to the employee stay one line of
// printable text, and nothing panics.
func FuzzCloseFrame(f *testing.F) {
	for _, s := range []string{`{"reason":"revoked"}`, `{"reason":"\u001b[2J"}`, ``, `{`, `{"reason":5}`, `{"reason":"` + strings.Repeat("é", 600) + `"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		err := closeFrame(payload)
		r := classify(err)
		for _, s := range []string{err.Error(), r.Message} {
			if strings.ContainsAny(s, "\n\r\x1b\x00") {
				t.Fatalf("control character in %q", s)
			}
		}
		if len(r.Message) > 200 {
			t.Fatalf("message of %d bytes", len(r.Message))
		}
	})
}

// TestRefusalsFromVocabulary: every reason of tunnel.Reasons with a
// sentence is classified with that sentence and that backoff class.
func TestRefusalsFromVocabulary(t *testing.T) {
	for _, ri := range tunnel.Reasons {
		if ri.Sentence == "" {
			continue
		}
		r := classify(&closeError{reason: string(ri.Reason)})
		if r.Code != string(ri.Reason) || r.Message != ri.Sentence || r.Permanent != ri.Permanent {
			t.Errorf("%s classified as %+v", ri.Reason, r)
		}
	}
}

// TestQUICCloseReason: a datagram-path session the gateway ends (its
// CONNECTION_CLOSE carries the reason, and may overtake the Close
// capsule) is classified by that reason, as a Close frame on the TLS
// stream is: revoked waits refused_delay, drain moves on at once. A close
// without a reason, or one of ours, stays a lost connection.
func TestQUICCloseReason(t *testing.T) {
	remote := func(code http3.ErrCode, msg string) error {
		return fmt.Errorf("read capsule: %w", &quic.ApplicationError{Remote: true, ErrorCode: quic.ApplicationErrorCode(code), ErrorMessage: msg})
	}
	for _, tt := range []struct {
		name      string
		err       error
		code      string
		permanent bool
	}{
		{"revoked", remote(http3.ErrCodeNoError, "revoked"), "revoked", true},
		{"drain", remote(http3.ErrCodeNoError, "drain"), codeDrain, false},
		{"kicked", remote(http3.ErrCodeNoError, "kicked"), "kicked", false},
		{"no reason", remote(http3.ErrCodeNoError, ""), codeNetwork, false},
		{"an error, not a close", remote(http3.ErrCodeInternalError, "x"), codeNetwork, false},
		{"our own close", &quic.ApplicationError{Remote: false, ErrorMessage: "client reload"}, codeNetwork, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := classify(quicClosed(tt.err))
			if r.Code != tt.code || r.Permanent != tt.permanent {
				t.Errorf("classify(quicClosed(%v)) = %+v, want code %q permanent %v", tt.err, r, tt.code, tt.permanent)
			}
		})
	}
}
