package main

// The renewal storm (issue 20): every held session asks the gateway for
// its next certificate, the requests spread evenly over a window (a fleet
// whose certificates all reach renew_at within a minute), each one the
// laptop's real request: a new key, a CSR bound to the session's TLS
// exporter. It measures the time from the first request to the last
// answer, the latency of each, the gateway's CPU per renewal (its CPU over
// the storm less what the same sessions cost idle), and whether any
// session was lost.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/tunnel"
)

// renewAnswer bounds the wait for one answer.
const renewAnswer = 60 * time.Second

// renewStats is what the storm measured.
type renewStats struct {
	mu          sync.Mutex
	offered     int // sessions the gateway offered renewal to
	ok          int
	reasons     map[string]int // failed renewals by why
	first, last time.Time
	lat         []time.Duration
}

// renewOnce asks for the next certificate on s and checks the answer.
func (s *session) renewOnce(ctx context.Context) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	binding, err := pki.RenewalBinding(s.tc.ConnectionState())
	if err != nil {
		return err
	}
	csr, err := pki.NewRenewalRequest(key, s.dev.name, binding)
	if err != nil {
		return err
	}
	b, err := tunnel.EncodeRenewRequest(tunnel.RenewRequest{CSR: csr})
	if err != nil {
		return err
	}
	_ = s.tc.SetWriteDeadline(time.Now().Add(keepaliveWrite))
	if err := s.w.WriteControl(tunnel.FrameRenew, b); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	t := time.NewTimer(renewAnswer)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-s.ended:
		return errors.New("session ended: " + s.reason)
	case <-t.C:
		return errors.New("no answer")
	case r := <-s.renewed:
		if r.Reason != "" {
			return errors.New("refused " + r.Reason)
		}
		leaf, err := x509.ParseCertificate(r.Certs[0])
		if err != nil {
			return fmt.Errorf("certificate: %w", err)
		}
		if !pki.SamePublicKey(leaf.PublicKey, key.Public()) {
			return errors.New("certificate for another key")
		}
		return nil
	}
}

// renewStorm runs the storm over the live sessions of f.
func renewStorm(ctx context.Context, f *fleet, window time.Duration) *renewStats {
	st := &renewStats{reasons: map[string]int{}}
	f.mu.Lock()
	var sessions []*session
	for _, s := range f.live {
		if s != nil && s.renewed != nil {
			sessions = append(sessions, s)
		}
	}
	f.mu.Unlock()
	st.offered = len(sessions)
	start := time.Now()
	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Go(func() {
			var at time.Duration
			if window > 0 {
				at = mrand.N(window)
			}
			if sleepCtx(ctx, at) != nil {
				return
			}
			t := time.Now()
			err := s.renewOnce(ctx)
			done := time.Now()
			st.mu.Lock()
			defer st.mu.Unlock()
			if st.first.IsZero() || t.Before(st.first) {
				st.first = t
			}
			if done.After(st.last) {
				st.last = done
			}
			if err != nil {
				st.reasons[errorClass(err)]++
				return
			}
			st.ok++
			st.lat = append(st.lat, done.Sub(t))
		})
	}
	wg.Wait()
	if st.first.IsZero() {
		st.first, st.last = start, start
	}
	slices.Sort(st.lat)
	return st
}

// percentile of sorted durations (0 when empty).
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(p * float64(len(d)-1))
	return d[i]
}
