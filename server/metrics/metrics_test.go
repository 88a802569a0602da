package metrics

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

type fakeSource Snapshot

func (f *fakeSource) MetricsSnapshot() Snapshot { return Snapshot(*f) }

func TestListenServesOnlyMetrics(t *testing.T) {
	now := time.Now()
	src := &fakeSource{Now: now, Sessions: 1, PerDevice: true, Refused: map[string]uint64{"revoked": 2},
		Devices: []Device{{Name: "alice", CertNotAfter: now.Add(time.Hour), Traffic: Traffic{BytesIn: 5, Drops: map[string]uint64{"policy": 1}}}},
		CRLs:    []CRL{{Issuer: "CN=CA", Number: 3, NextUpdate: now.Add(time.Hour)}}, LastReloadSuccess: now}
	s, err := Listen("127.0.0.1:0", src, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + s.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/metrics")
	for _, want := range []string{`sallyport_handshakes_total{reason="revoked",result="refused"} 2`, `sallyport_device_tunnel_bytes_total{device="alice",direction="in"} 5`,
		`sallyport_device_dropped_packets_total{device="alice",reason="policy"} 1`, `sallyport_crl_number{issuer="CN=CA"} 3`, "sallyport_cert_expiry_shortest_seconds 3600"} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("GET /metrics %d: no %q", code, want)
		}
	}
	for _, p := range []string{"/", "/debug/pprof/", "/metrics/x"} {
		if code, _ := get(p); code != 404 {
			t.Errorf("GET %s: %d, want 404", p, code)
		}
	}
	if problems, err := testutil.CollectAndLint(NewCollector(src)); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
}
