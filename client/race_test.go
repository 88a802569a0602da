package client

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"
)

// TestRace: happy eyeballs between the datagram path and the TLS stream.
// Which path wins, and the reason status gives, for each way UDP behaves;
// the loser that completes later is closed, and when both fail the TLS
// stream's error (where refusals are told) is returned.
func TestRace(t *testing.T) {
	quicUp := opened{quic: nil, tls: nil}
	tlsUp := opened{tls: &tlsDial{addr: "tls"}}
	errUDP := errors.New("no route over UDP")
	errRefused := errors.New("gateway closed the session: revoked")
	after := func(d time.Duration, o opened, err error) func(context.Context) (opened, error) {
		return func(ctx context.Context) (opened, error) {
			select {
			case <-time.After(d):
				return o, err
			case <-ctx.Done():
				return opened{}, ctx.Err()
			}
		}
	}
	never := after(time.Hour, opened{}, nil)
	for _, tc := range []struct {
		name         string
		dialQ, dialT func(context.Context) (opened, error)
		wantPath     string
		wantWhy      string
		wantErr      error
	}{
		{"UDP up", after(0, quicUp, nil), never, PathQUIC, "the datagram path (UDP) is up", nil},
		{"UDP up after the TLS stream started, before it is up", after(150*time.Millisecond, quicUp, nil), after(time.Second, tlsUp, nil), PathQUIC, "the datagram path (UDP) is up", nil},
		{"UDP blocked: no answer", never, after(0, tlsUp, nil), PathTLS, "UDP gave no answer within 100ms", nil},
		{"UDP fails at once", after(0, opened{}, errUDP), after(0, tlsUp, nil), PathTLS, "UDP failed: no route over UDP", nil},
		{"UDP slower than the TLS stream", after(time.Second, quicUp, nil), after(0, tlsUp, nil), PathTLS, "UDP gave no answer within 100ms", nil},
		{"both fail: the stream's error", after(0, opened{}, errUDP), after(0, opened{}, errRefused), "", "", errRefused},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Client{cfg: &Config{Transport: TransportConfig{FallbackAfter: 100 * time.Millisecond}}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
			start := time.Now()
			o, err := c.race(context.Background(), tc.dialQ, tc.dialT)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if got := map[bool]string{true: PathTLS, false: PathQUIC}[o.tls != nil]; got != tc.wantPath || c.path != tc.wantPath || c.pathWhy != tc.wantWhy {
				t.Fatalf("won %s, status %s (%q); want %s (%q)", got, c.path, c.pathWhy, tc.wantPath, tc.wantWhy)
			}
			if tc.wantWhy == "UDP gave no answer within 100ms" && time.Since(start) < 100*time.Millisecond {
				t.Fatal("the TLS stream was tried before fallback_after")
			}
		})
	}
}
