package e2e

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// revokedSentence is what the employee of a revoked device reads.
const revokedSentence = "refused: this device's certificate was revoked — contact your admin"

// TestRevokedLaptopBacksOff: a revoked device's laptop tells its employee
// why in `sallyport status` and stops knocking (reconnect.refused_delay,
// 5 minutes by default) instead of retrying every few seconds — both when
// its live session is cut and when a new `sallyport up` is refused at the
// handshake.
func TestRevokedLaptopBacksOff(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	sock := shortTempDir(t)
	gw := tp.startGateway(defaultServerConf(k, "wireguard", sock))
	cc := clientConf(k, "alice", "wireguard", sock)
	alice := tp.startLaptop(tp.Lap, "alice", cc)
	alice.waitUp(15 * time.Second)

	k.Revoke("alice")
	alice.waitRefused(t, "revoked", 10*time.Second)

	// Restarted, the client is refused at the handshake (a Close frame
	// after TLS) and says the same.
	if !alice.Proc.Stop(10 * time.Second) {
		t.Fatalf("client did not stop on SIGTERM:\n%s", tail(alice.Proc.Log(), 20))
	}
	n0 := aliceRefusals(gw.Proc.Err())
	alice = tp.startLaptop(tp.Lap, "alice-again", cc)
	alice.waitRefused(t, "revoked", 15*time.Second)
	if !waitFor(5*time.Second, func() bool { return aliceRefusals(gw.Proc.Err()) > n0 }) {
		t.Fatalf("the gateway logged no refusal of alice:\n%s", tail(gw.Proc.Err(), 10))
	}
	// It does not come back within 10 s (with the normal backoff it would
	// have tried about five more times).
	n1 := aliceRefusals(gw.Proc.Err())
	time.Sleep(10 * time.Second)
	if n := aliceRefusals(gw.Proc.Err()); n != n1 {
		t.Errorf("the refused laptop tried again %d times within 10 s", n-n1)
	}
	if alice.Proc.Exited() {
		t.Fatalf("client exited after the refusal:\n%s", tail(alice.Proc.Log(), 20))
	}
	if !strings.Contains(alice.Proc.Err(), `reason=revoked`) || !strings.Contains(alice.Proc.Err(), revokedSentence) {
		t.Errorf("client log has no refusal line:\n%s", tail(alice.Proc.Err(), 10))
	}
}

// waitRefused waits until `sallyport status --json` shows the refusal code
// with a retry minutes away, then checks the human-readable status shows
// the sentence.
func (l *Laptop) waitRefused(t *testing.T, code string, timeout time.Duration) {
	t.Helper()
	var st struct {
		Connected bool      `json:"connected"`
		Refused   string    `json:"refused"`
		Message   string    `json:"message"`
		RetryAt   time.Time `json:"retry_at"`
	}
	if !waitFor(timeout, func() bool {
		out, err := exec.Command("ip", "netns", "exec", l.NS, binPath, "status", "--socket", l.Socket, "--json").Output()
		return err == nil && json.Unmarshal(out, &st) == nil && st.Refused == code
	}) {
		t.Fatalf("laptop status never showed refused=%s (last %+v):\n%s", code, st, tail(l.Proc.Log(), 20))
	}
	if st.Connected || st.Message != revokedSentence {
		t.Errorf("status %+v, want message %q", st, revokedSentence)
	}
	if left := time.Until(st.RetryAt); left < 4*time.Minute {
		t.Errorf("a revoked laptop retries in %v, want reconnect.refused_delay (5m)", left)
	}
	out, err := exec.Command("ip", "netns", "exec", l.NS, binPath, "status", "--socket", l.Socket).CombinedOutput()
	if err != nil || !strings.Contains(string(out), revokedSentence) {
		t.Errorf("sallyport status: %v\n%s", err, out)
	}
}

// aliceRefusals counts the gateway's "handshake refused" lines for alice.
func aliceRefusals(log string) int {
	n := 0
	for _, l := range refusals(log) {
		if hasKV(l, "device", "alice") {
			n++
		}
	}
	return n
}
