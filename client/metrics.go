package client

// The laptop's optional Prometheus metrics ([metrics] listen, off by
// default): whether the tunnel is up, how often it connected, bytes and
// packets, drops by reason (tunnel.LaptopDrops), certificate expiry. Read
// from the client's counters at scrape time.

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sallyport/sallyport/internal/metricsrv"
	"github.com/sallyport/sallyport/tunnel"
)

var (
	dUp       = prometheus.NewDesc("sallyport_client_connected", "1 while the tunnel is up.", nil, nil)
	dConnects = prometheus.NewDesc("sallyport_client_connects_total", "Sessions established with a gateway (reconnects + 1).", nil, nil)
	dBytes    = prometheus.NewDesc("sallyport_client_tunnel_bytes_total", "IP bytes through the tunnel; in is from the gateway.", []string{"direction"}, nil)
	dPackets  = prometheus.NewDesc("sallyport_client_tunnel_packets_total", "IP packets through the tunnel; in is from the gateway.", []string{"direction"}, nil)
	dExpiry   = prometheus.NewDesc("sallyport_client_cert_expiry_seconds", "Seconds until this device's certificate expires.", nil, nil)
	dDropped  = prometheus.NewDesc("sallyport_client_dropped_packets_total", "Packets the laptop dropped, by reason (congestion, offline, malformed).", []string{"reason"}, nil)
)

// collector exports one client's state.
type collector struct{ c *Client }

func (m collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dUp, dConnects, dBytes, dPackets, dExpiry, dDropped} {
		ch <- d
	}
}

func (m collector) Collect(ch chan<- prometheus.Metric) {
	c := m.c
	up := 0.0
	if c.cur.Load() != nil {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(dUp, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(dConnects, prometheus.CounterValue, float64(c.connects.Load()))
	for _, v := range []struct {
		d   *prometheus.Desc
		val uint64
		dir string
	}{{dBytes, c.bytesIn.Load(), "in"}, {dBytes, c.bytesOut.Load(), "out"}, {dPackets, c.packetsIn.Load(), "in"}, {dPackets, c.packetsOut.Load(), "out"}} {
		ch <- prometheus.MustNewConstMetric(v.d, prometheus.CounterValue, float64(v.val), v.dir)
	}
	ch <- prometheus.MustNewConstMetric(dExpiry, prometheus.GaugeValue, time.Until(c.material().leaf.NotAfter).Seconds())
	for _, r := range tunnel.LaptopDrops {
		ch <- prometheus.MustNewConstMetric(dDropped, prometheus.CounterValue, float64(c.drops.Load(r)), r.String())
	}
}

// registry is the laptop's metrics with the Go runtime's.
func registry(c *Client) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{c}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func listenMetrics(c *Client) (*metricsrv.Server, error) {
	ms, err := metricsrv.Listen(c.cfg.Metrics.Listen, registry(c), c.log)
	if err != nil {
		return nil, err
	}
	c.log.Info("metrics up", "listen", ms.Addr().String())
	if metricsrv.Wildcard(c.cfg.Metrics.Listen) {
		c.log.Warn("metrics.listen is a wildcard address: anyone on the networks this laptop joins (a café's Wi-Fi, a hotel's) can read /metrics (plain HTTP, no authentication); bind it to 127.0.0.1",
			"listen", c.cfg.Metrics.Listen)
	}
	return ms, nil
}
