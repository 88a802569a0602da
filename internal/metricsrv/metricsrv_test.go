package metricsrv

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestListen: /metrics serves the registry, every other path is a 404,
// and Close ends the listener.
func TestListen(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sallyport_test_gauge", Help: "a test gauge"})
	g.Set(7)
	reg.MustRegister(g)
	s, err := Listen("127.0.0.1:0", reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + s.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "sallyport_test_gauge 7") {
		t.Fatalf("/metrics: %d\n%s", code, body)
	}
	if code, _ := get("/debug/pprof/"); code != 404 {
		t.Fatalf("/debug/pprof/: %d, want 404", code)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + s.Addr().String() + "/metrics"); err == nil {
		t.Fatal("listener still answers after Close")
	}
	if _, err := Listen("256.0.0.1:0", reg, nil); err == nil {
		t.Fatal("a bad address was accepted")
	}
}

func TestWildcard(t *testing.T) {
	for addr, want := range map[string]bool{
		":9580": true, "0.0.0.0:9580": true, "[::]:9580": true, "[::ffff:0.0.0.0]:9580": true,
		"127.0.0.1:9580": false, "[::1]:9580": false, "192.0.2.7:9580": false, "gw.example:9580": false, "nonsense": false,
	} {
		if got := Wildcard(addr); got != want {
			t.Errorf("Wildcard(%q) = %v, want %v", addr, got, want)
		}
	}
}
