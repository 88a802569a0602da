package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/internal/testenv"
)

// Operations (issue 11): metrics, policy as code, live push, drain.

const metricsAddr = "127.0.0.1:9580"

// helperHTTPGet prints "status=N" and then the body of GET url.
func helperHTTPGet(url string) error {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	fmt.Printf("status=%d\n%s", resp.StatusCode, b)
	return nil
}

// scrapeMetrics fetches path from the gateway's metrics listener.
func (tp *Topo) scrapeMetrics(path string) (status int, body string) {
	tp.t.Helper()
	out, _ := tp.helperRun(10*time.Second, tp.GW, "httpget", "http://"+metricsAddr+path)
	first, rest, _ := strings.Cut(out, "\n")
	if !strings.HasPrefix(first, "status=") {
		tp.t.Fatalf("GET %s: %s", path, out)
	}
	return atoi(strings.TrimPrefix(first, "status="), 0), rest
}

// sample is the value of the series (name with labels, exactly as
// exposed), or -1.
func sample(text, series string) float64 {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// TestMetrics: /metrics scraped during a session shows it, bytes moving
// and a refused handshake under its reason; the text passes promtool.
func TestMetrics(t *testing.T) {
	requireRoot(t)
	promtool := testenv.Command(t, "promtool")
	t.Parallel()
	tp := newTopo(t, false)
	k := stdPKI(t)
	k.Issue("carol", []string{"sales"}) // matches no policy
	sock := shortTempDir(t)
	sc := defaultServerConf(k, "wireguard", sock, restrictive)
	sc.Extra = "[metrics]\nlisten = " + strconv.Quote(metricsAddr) + "\n"
	gw := tp.startGateway(sc)
	alice := tp.startLaptop(tp.Lap, "alice", clientConf(k, "alice", "wireguard", sock))
	alice.waitUp(15 * time.Second)
	if got := tp.ping(tp.Lap, lanHost, 3); got != 3 {
		t.Fatalf("ping through the tunnel: %d/3", got)
	}
	crt, key := k.Device("carol")
	hold := filepath.Join(t.TempDir(), "go")
	if err := os.WriteFile(hold, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	out, _ := tp.helperRun(15*time.Second, tp.Lap, "tlsdial", listen, gwName, k.CA(), crt, key, hold)
	if field(out, "close_reason") != "no-policy" {
		t.Fatalf("carol: %s, want close reason no-policy", out)
	}

	code, text := tp.scrapeMetrics("/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d\n%s", code, text)
	}
	for series, min := range map[string]float64{
		"sallyport_sessions": 1,
		`sallyport_handshakes_total{reason="no-policy",result="refused"}`: 1,
		`sallyport_handshakes_total{reason="",result="accepted"}`:         1,
		`sallyport_tunnel_bytes_total{direction="in"}`:                    3 * 84,
		`sallyport_tunnel_bytes_total{direction="out"}`:                   3 * 84,
		`sallyport_tunnel_packets_total{direction="in"}`:                  3,
		"sallyport_pool_addresses_in_use":                                 1,
		"sallyport_cert_expiry_shortest_seconds":                          86400,
	} {
		if v := sample(text, series); v < min {
			t.Errorf("%s = %v, want >= %v", series, v, min)
		}
	}
	if sample(text, "sallyport_sessions") != 1 {
		t.Errorf("sallyport_sessions = %v, want 1", sample(text, "sallyport_sessions"))
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
	if code, _ := tp.scrapeMetrics("/"); code != 404 {
		t.Errorf("GET / on the metrics listener: %d, want 404 (only /metrics is served)", code)
	}
	_ = gw
}
