package server

import (
	"crypto/x509"
	"io"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sallyport/sallyport/internal/metricsrv"
	"github.com/sallyport/sallyport/server/metrics"
	"github.com/sallyport/sallyport/server/policy"
	"github.com/sallyport/sallyport/tunnel"
)

// scrape returns the text of GET /metrics.
func scrape(t *testing.T, s *Server) string {
	t.Helper()
	rec := httptest.NewRecorder()
	metricsrv.Handler(metrics.Registry(s), nil).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /metrics: %d", rec.Code)
	}
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

// has reports whether text has the sample line "series value".
func has(text, series, value string) bool {
	for _, l := range strings.Split(text, "\n") {
		if l == series+" "+value {
			return true
		}
	}
	return false
}

// TestMetricsFromGateway: a session, its traffic and drops, a refused
// handshake under its reason, and the close reason; gateway totals keep
// the traffic of a session that has ended, and nothing fails the linter.
func TestMetricsFromGateway(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	alice := h.connect(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	defer alice.tc.Close()
	alice.send(t, udp4(alice.addr, "192.168.77.10", 5000, 53))  // allowed
	alice.send(t, udp4("10.8.0.99", "192.168.77.10", 5000, 53)) // spoofed
	h.dial(h.ca.leafWithKey(t, "carol", []string{"sales"}, x509.ExtKeyUsageClientAuth)).wantClose(t, tunnel.ReasonNoPolicy)
	waitFor(t, func() bool { st, _ := h.sessionOf("alice"); return st.Dropped.Spoofed == 1 })

	text := scrape(t, h.s)
	for _, want := range [][2]string{
		{"sallyport_sessions", "1"},
		{`sallyport_handshakes_total{reason="",result="accepted"}`, "1"},
		{`sallyport_handshakes_total{reason="no-policy",result="refused"}`, "1"},
		{`sallyport_tunnel_packets_total{direction="in"}`, "2"},
		{`sallyport_dropped_packets_total{reason="spoofed"}`, "1"},
		{`sallyport_dropped_packets_total{reason="policy"}`, "0"},
		{"sallyport_pool_addresses", "253"},
		{"sallyport_pool_addresses_in_use", "1"},
		{"sallyport_config_reload_failures_total", "0"},
	} {
		if !has(text, want[0], want[1]) {
			t.Errorf("missing %s %s in\n%s", want[0], want[1], grepSallyport(text))
		}
	}
	if strings.Contains(text, "sallyport_device_") {
		t.Error("per-device series without per_device = true")
	}
	if !strings.Contains(text, "sallyport_cert_expiry_shortest_seconds ") || !strings.Contains(text, "go_goroutines ") ||
		!strings.Contains(text, "sallyport_build_info{") {
		t.Errorf("expiry, runtime or build info missing:\n%s", grepSallyport(text))
	}

	// Per device when asked for (applies on reload).
	h.s.config().Metrics.PerDevice = true
	if text := scrape(t, h.s); !has(text, `sallyport_device_dropped_packets_total{device="alice",reason="spoofed"}`, "1") {
		t.Errorf("per_device: no per-device drops:\n%s", grepSallyport(text))
	}
	h.s.config().Metrics.PerDevice = false

	// The session ends: its counters stay in the totals.
	h.s.Kick("alice")
	alice.wantClose(t, "kicked")
	waitFor(t, func() bool {
		return has(scrape(t, h.s), `sallyport_session_closes_total{reason="kicked"}`, "1")
	})
	text = scrape(t, h.s)
	for _, want := range [][2]string{
		{"sallyport_sessions", "0"},
		{`sallyport_tunnel_packets_total{direction="in"}`, "2"},
		{`sallyport_dropped_packets_total{reason="spoofed"}`, "1"},
		{"sallyport_pool_addresses_in_use", "0"},
	} {
		if !has(text, want[0], want[1]) {
			t.Errorf("after the session ended: missing %s %s in\n%s", want[0], want[1], grepSallyport(text))
		}
	}

	// A failed reload is counted.
	writeFile(t, h.s.config().Path, "not toml [")
	h.s.Reload("test")
	if text := scrape(t, h.s); !has(text, "sallyport_config_reload_failures_total", "1") {
		t.Errorf("reload failure not counted:\n%s", grepSallyport(text))
	}

	problems, err := testutil.CollectAndLint(metrics.NewCollector(h.s))
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
}

func grepSallyport(text string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "sallyport_") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestMetricsCRLAndReload: the CRL's number and nextUpdate and the time of
// the last successful load are exported.
func TestMetricsCRLAndReload(t *testing.T) {
	h := newGatewayHarness(t, []policy.Policy{{Name: "all", Match: policy.Match{CN: []string{"*"}}, Allow: []string{"10.0.0.0/8"}}}, netip.Prefix{})
	defer h.close()
	h.writeCRL(7, h.s.trustNow().loadedAt.Add(48*3600e9))
	h.reload("crl = \"crl.pem\"\n" + engPolicyTOML)
	text := scrape(t, h.s)
	if !has(text, `sallyport_crl_number{issuer="CN=Harness CA"}`, "7") {
		t.Errorf("CRL number missing:\n%s", grepSallyport(text))
	}
	if !strings.Contains(text, `sallyport_crl_next_update_timestamp_seconds{issuer="CN=Harness CA"} `) ||
		!strings.Contains(text, "sallyport_config_last_reload_success_timestamp_seconds ") {
		t.Errorf("CRL nextUpdate or reload time missing:\n%s", grepSallyport(text))
	}
}
