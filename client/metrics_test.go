package client

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sallyport/sallyport/tunnel"
)

// TestLaptopMetrics: with [metrics] listen the laptop serves its state,
// connects, bytes and drops by reason, lint-clean.
func TestLaptopMetrics(t *testing.T) {
	noLeaks(t)
	e := startClient(t, envOpt{edit: func(c *Config) { c.Metrics.Listen = "127.0.0.1:0" }})
	s, _ := e.up(testConfig())
	<-e.ready
	in := ping(3)
	if err := s.w.WriteBatch([][]byte{in}, []int{len(in)}, 1, 0); err != nil {
		t.Fatal(err)
	}
	e.tun.recv(t)
	problems, err := testutil.CollectAndLint(collector{e.c})
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %+v", err, problems)
	}
	e.c.drops.Add(tunnel.DropOffline, 2) // as the send loop counts a packet read while no session was up
	if d := e.c.Status().Dropped; len(d) != len(tunnel.LaptopDrops) || d["offline"] != 2 || d["congestion"] != 0 {
		t.Errorf("status dropped = %v, want every laptop reason, offline 2", d)
	}
	ms, err := listenMetrics(e.c) // a second listener on a free port, to read the text
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	resp, err := http.Get("http://" + ms.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"sallyport_client_connected 1", "sallyport_client_connects_total 1", `sallyport_client_tunnel_packets_total{direction="in"} 1`,
		`sallyport_client_tunnel_bytes_total{direction="in"} ` + strconv.Itoa(len(in)),
		`sallyport_client_dropped_packets_total{reason="offline"} 2`, `sallyport_client_dropped_packets_total{reason="malformed"} 0`} {
		if !strings.Contains(string(b), want+"\n") {
			t.Errorf("no %q in\n%s", want, b)
		}
	}
}
