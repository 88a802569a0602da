// Package metrics exposes the gateway's counters to Prometheus
// (github.com/prometheus/client_golang). It holds no counters of its own:
// a Collector asks a Source for a Snapshot at scrape time, so the data
// plane pays nothing for metrics, and Listen serves GET /metrics (and
// nothing else, internal/metricsrv) on the address of [metrics] listen.
package metrics

import (
	"log/slog"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sallyport/sallyport/internal/metricsrv"
)

// Version is the build's version, shown in sallyport_build_info. main sets
// it once at start.
var Version = "dev"

// Traffic counts packets through the gateway, from the gateway's point of
// view: In is from the device into the gateway, Out from the gateway to the
// device.
type Traffic struct {
	BytesIn, BytesOut     uint64
	PacketsIn, PacketsOut uint64
	// Drops counts dropped packets by reason (spoofed, policy, no_flow,
	// queue_full, malformed, congestion, no_session).
	Drops map[string]uint64
}

// Device is one connected device.
type Device struct {
	Name         string // certificate CN
	CertNotAfter time.Time
	Traffic      Traffic
}

// CRL is one CRL in force.
type CRL struct {
	Issuer     string
	Number     float64 // -1 when the CRL has no number
	NextUpdate time.Time
}

// Snapshot is the gateway's state at one instant.
type Snapshot struct {
	Now              time.Time
	Sessions         int
	HandshakesActive int
	// HandshakesWaitingHello are those not past their TLS ClientHello
	// (the ones a newcomer may evict when all slots are busy).
	HandshakesWaitingHello int
	// HandshakesPastHello are those past their ClientHello whose
	// certificate is not checked yet (evicted only to share the slots out
	// between networks).
	HandshakesPastHello int
	// DuplicateDevices are devices found in use on two machines within the
	// last minute (their refusals count in Refused, duplicate-device).
	DuplicateDevices  int
	Accepted          uint64            // handshakes that became sessions
	Refused           map[string]uint64 // refused handshakes by reason
	Closed            map[string]uint64 // closed sessions by reason
	Total             Traffic           // every session so far, closed and live
	Devices           []Device          // live sessions
	PerDevice         bool              // export Devices' traffic and expiry per device
	CRLs              []CRL
	LastReloadSuccess time.Time
	ReloadFailures    uint64
	PoolSize          int // addresses devices can be given
	LeasesUsed        int // addresses held by live sessions
	// Renewal is false when the gateway does not renew certificates.
	Renewal        bool
	Renewed        uint64            // certificates renewed inside sessions
	RenewRefused   map[string]uint64 // refused renewals by reason
	RenewSeconds   float64           // wall time spent issuing renewals
	SessionsPerCA  map[string]int    // live sessions by the CA their chain ends at
	IssuerNotAfter time.Time         // the online issuer's expiry
}

// Source gives a Snapshot; the gateway implements it.
type Source interface {
	MetricsSnapshot() Snapshot
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("sallyport_"+name, help, labels, nil)
}

var (
	dSessions                            = desc("sessions", "Live device sessions.")
	dHandshaking                         = desc("handshakes_in_flight", "TLS handshakes in progress.")
	dDuplicates                          = desc("duplicate_devices", "Devices found in use on two machines within the last minute (the session in place kept each; see server status).")
	dWaitingHello                        = desc("handshakes_waiting_hello", "Connections holding a handshake slot that have not sent their whole TLS ClientHello yet (evictable).")
	dPastHello                           = desc("handshakes_past_hello", "Connections holding a handshake slot past their TLS ClientHello whose certificate is not checked yet (evictable to share the slots out between networks).")
	dHandshakes                          = desc("handshakes_total", "Completed handshake attempts by result (accepted, refused) and refusal reason.", "result", "reason")
	dCloses                              = desc("session_closes_total", "Sessions closed, by close reason.", "reason")
	dBytes                               = desc("tunnel_bytes_total", "IP bytes relayed; direction in is from devices, out is to devices.", "direction")
	dPackets                             = desc("tunnel_packets_total", "IP packets relayed; direction in is from devices, out is to devices.", "direction")
	dDrops                               = desc("dropped_packets_total", "Packets dropped by the gateway, by reason.", "reason")
	dExpiryMin                           = desc("cert_expiry_shortest_seconds", "Seconds until the soonest certificate expiry among connected devices.")
	dDevBytes                            = desc("device_tunnel_bytes_total", "IP bytes relayed for one connected device (per_device = true).", "device", "direction")
	dDevPackets                          = desc("device_tunnel_packets_total", "IP packets relayed for one connected device (per_device = true).", "device", "direction")
	dDevDrops                            = desc("device_dropped_packets_total", "Packets dropped for one connected device, by reason (per_device = true).", "device", "reason")
	dDevExpiry                           = desc("device_cert_expiry_seconds", "Seconds until a connected device's certificate expires (per_device = true).", "device")
	dCRLNext                             = desc("crl_next_update_timestamp_seconds", "nextUpdate of each CRL in force, as a Unix time.", "issuer")
	dCRLNumber                           = desc("crl_number", "CRL number of each CRL in force.", "issuer")
	dReloadTime                          = desc("config_last_reload_success_timestamp_seconds", "When the configuration, CA and CRL were last loaded successfully, as a Unix time.")
	dReloadAge                           = desc("config_last_reload_success_age_seconds", "Seconds since the configuration, CA and CRL were last loaded successfully.")
	dReloadFailures                      = desc("config_reload_failures_total", "Reloads that failed (the running configuration was kept).")
	dPoolSize                            = desc("pool_addresses", "Tunnel addresses the pool can hand out.")
	dPoolUsed                            = desc("pool_addresses_in_use", "Tunnel addresses held by live sessions.")
	dBuild                               = desc("build_info", "Build of the running gateway (always 1).", "version", "goversion")
	dRenewals                            = desc("cert_renewals_total", "Device certificate renewals inside sessions by result (issued, refused) and refusal reason.", "result", "reason")
	dRenewSeconds                        = desc("cert_renewal_seconds_total", "Wall time spent deciding and issuing the renewals that were issued.")
	dPerCA                               = desc("sessions_per_ca", "Live sessions by the CA their device chain ends at (subject).", "ca")
	dIssuerExpiry                        = desc("renewal_issuer_expiry_timestamp_seconds", "When the online issuer's certificate expires, as a Unix time.")
	allDescs                             = []*prometheus.Desc{dSessions, dHandshaking, dWaitingHello, dPastHello, dDuplicates, dHandshakes, dCloses, dBytes, dPackets, dDrops, dExpiryMin, dDevBytes, dDevPackets, dDevDrops, dDevExpiry, dCRLNext, dCRLNumber, dReloadTime, dReloadAge, dReloadFailures, dPoolSize, dPoolUsed, dBuild, dRenewals, dRenewSeconds, dPerCA, dIssuerExpiry}
	_               prometheus.Collector = (*Collector)(nil)
)

// Collector turns Snapshots into Prometheus metrics.
type Collector struct{ src Source }

// NewCollector reads src at every scrape.
func NewCollector(src Source) *Collector { return &Collector{src: src} }

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect sends the metrics of one Snapshot.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.MetricsSnapshot()
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	gauge(dSessions, float64(s.Sessions))
	gauge(dHandshaking, float64(s.HandshakesActive))
	gauge(dWaitingHello, float64(s.HandshakesWaitingHello))
	gauge(dPastHello, float64(s.HandshakesPastHello))
	gauge(dDuplicates, float64(s.DuplicateDevices))
	counter(dHandshakes, s.Accepted, "accepted", "")
	for r, n := range s.Refused {
		counter(dHandshakes, n, "refused", r)
	}
	for r, n := range s.Closed {
		counter(dCloses, n, r)
	}
	traffic(ch, s.Total, dBytes, dPackets, dDrops)
	var soonest time.Time
	for _, d := range s.Devices {
		if soonest.IsZero() || d.CertNotAfter.Before(soonest) {
			soonest = d.CertNotAfter
		}
		if s.PerDevice {
			traffic(ch, d.Traffic, dDevBytes, dDevPackets, dDevDrops, d.Name)
			gauge(dDevExpiry, d.CertNotAfter.Sub(s.Now).Seconds(), d.Name)
		}
	}
	if !soonest.IsZero() {
		gauge(dExpiryMin, soonest.Sub(s.Now).Seconds())
	}
	for _, crl := range s.CRLs {
		if !crl.NextUpdate.IsZero() {
			gauge(dCRLNext, float64(crl.NextUpdate.Unix()), crl.Issuer)
		}
		if crl.Number >= 0 {
			gauge(dCRLNumber, crl.Number, crl.Issuer)
		}
	}
	if !s.LastReloadSuccess.IsZero() {
		gauge(dReloadTime, float64(s.LastReloadSuccess.UnixMilli())/1000)
		gauge(dReloadAge, s.Now.Sub(s.LastReloadSuccess).Seconds())
	}
	counter(dReloadFailures, s.ReloadFailures)
	gauge(dPoolSize, float64(s.PoolSize))
	gauge(dPoolUsed, float64(s.LeasesUsed))
	gauge(dBuild, 1, Version, runtime.Version())
	for ca, n := range s.SessionsPerCA {
		gauge(dPerCA, float64(n), ca)
	}
	if s.Renewal {
		counter(dRenewals, s.Renewed, "issued", "")
		for r, n := range s.RenewRefused {
			counter(dRenewals, n, "refused", r)
		}
		ch <- prometheus.MustNewConstMetric(dRenewSeconds, prometheus.CounterValue, s.RenewSeconds)
		gauge(dIssuerExpiry, float64(s.IssuerNotAfter.Unix()))
	}
}

// traffic sends bytes, packets and drops, with the device label first when
// given.
func traffic(ch chan<- prometheus.Metric, t Traffic, bytes, packets, drops *prometheus.Desc, device ...string) {
	c := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append(device[:len(device):len(device)], l...)...)
	}
	c(bytes, t.BytesIn, "in")
	c(bytes, t.BytesOut, "out")
	c(packets, t.PacketsIn, "in")
	c(packets, t.PacketsOut, "out")
	for r, n := range t.Drops {
		c(drops, n, r)
	}
}

// Registry returns a registry with the gateway's collector and the Go
// runtime, process and Go build collectors.
func Registry(src Source) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector())
	return reg
}

// Server is the metrics HTTP listener (internal/metricsrv).
type Server = metricsrv.Server

// Listen binds addr and serves src's metrics until Close.
func Listen(addr string, src Source, log *slog.Logger) (*Server, error) {
	return metricsrv.Listen(addr, Registry(src), log)
}
