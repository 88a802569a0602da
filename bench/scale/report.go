package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Goals of issue 14, printed as PASS/MISS beside the figures
// (informational: the exit status does not depend on them).
const (
	goalPerSession = 64 << 10 // resident bytes per idle session
	goalChurnRatio = 0.8      // new sessions/s against bare TLS
	goalRatchet    = 1.25     // RSS after the last cycle over RSS after the first
)

// results is what a load run measured; zero fields were not reached.
type results struct {
	Devices, CPUs               int
	BaselineRSS, HeldRSS        uint64
	Held, HeldAfterIdle         int
	RampSeconds, RampCPUSeconds float64
	IdleSeconds, IdleCPUSeconds float64
	Storm, StormRetries         int
	StormFailed                 int
	StormSeconds                float64
	CycleRates                  []float64
	CycleRSS                    []uint64
	HeldAfterCycles             int
	ClosedRSS, PeakRSS          uint64
	ChurnOps, ChurnFailed       int
	BareRate, GatewayRate       float64
	BareCPUms, GatewayCPUms     float64 // server CPU per churned session
	Lost, Errors                map[string]int
	Aborted                     string
	// The renewal storm (renew.go).
	RenewWindow                  time.Duration
	RenewOffered, Renewed        int
	RenewFailed                  map[string]int
	RenewNotOffered              bool
	RenewSeconds                 float64
	RenewP50, RenewP99, RenewMax time.Duration
	RenewCPUSeconds, RenewCPUms  float64
	RenewLost, HeldAfterRenew    int
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// perSession is the resident memory each session added over the baseline.
func perSession(rss, baseline uint64, sessions int) (uint64, bool) {
	if sessions <= 0 || rss < baseline {
		return 0, false
	}
	return (rss - baseline) / uint64(sessions), true
}

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// format prints the table and, after it, the same figures as key=value
// lines for scripts.
func (r *results) format() string {
	var b, kv strings.Builder
	row := func(name, value, note string) {
		fmt.Fprintf(&b, "  %-44s %-22s %s\n", name, value, note)
	}
	pair := func(k string, v any) { fmt.Fprintf(&kv, "%s=%v ", k, v) }
	fmt.Fprintf(&b, "scale: %d devices against one gateway, %d CPUs\n", r.Devices, r.CPUs)
	pair("devices", r.Devices)
	if r.Held > 0 {
		row("sessions held", fmt.Sprintf("%d / %d", r.Held, r.Devices), fmt.Sprintf("(ramp %.1f s, %.0f/s)", r.RampSeconds, float64(r.Held)/r.RampSeconds))
		row("gateway RSS before sessions", mib(r.BaselineRSS), "")
		per, _ := perSession(r.HeldRSS, r.BaselineRSS, r.Held)
		row(fmt.Sprintf("gateway RSS with %d sessions", r.Held), mib(r.HeldRSS), fmt.Sprintf("%.1f KiB/session (goal <= 64 KiB) %s", float64(per)/1024, verdict(per <= goalPerSession)))
		pair("held", r.Held)
		pair("baseline_rss_mib", fmt.Sprintf("%.1f", float64(r.BaselineRSS)/(1<<20)))
		pair("held_rss_mib", fmt.Sprintf("%.1f", float64(r.HeldRSS)/(1<<20)))
		pair("rss_per_session_kib", fmt.Sprintf("%.1f", float64(per)/1024))
		if r.RampCPUSeconds > 0 {
			row("gateway CPU per session set up (ramp)", fmt.Sprintf("%.2f ms", r.RampCPUSeconds*1000/float64(r.Held)), "")
			pair("ramp_cpu_ms_per_session", fmt.Sprintf("%.2f", r.RampCPUSeconds*1000/float64(r.Held)))
		}
	}
	if r.IdleSeconds > 0 {
		perMin := r.IdleCPUSeconds * 60 / r.IdleSeconds
		row(fmt.Sprintf("gateway CPU, %d idle sessions", r.HeldAfterIdle), fmt.Sprintf("%.2f s/min", perMin), fmt.Sprintf("(%.0f%% of one CPU, over %.0f s)", perMin/60*100, r.IdleSeconds))
		pair("idle_cpu_s_per_min", fmt.Sprintf("%.2f", perMin))
	}
	if r.RenewNotOffered {
		row("renewal storm", "skipped", "(the gateway offers no renewal)")
	} else if r.RenewOffered > 0 {
		failed := 0
		for _, n := range r.RenewFailed {
			failed += n
		}
		row(fmt.Sprintf("renewal storm, %d sessions over %v", r.RenewOffered, r.RenewWindow), fmt.Sprintf("%.1f s", r.RenewSeconds),
			fmt.Sprintf("%d renewed, %d failed, %d sessions lost %s; latency p50 %v p99 %v max %v", r.Renewed, failed, r.RenewLost,
				verdict(failed == 0 && r.RenewLost == 0 && r.Renewed == r.RenewOffered), r.RenewP50.Round(time.Millisecond), r.RenewP99.Round(time.Millisecond), r.RenewMax.Round(time.Millisecond)))
		row("gateway CPU per renewal", fmt.Sprintf("%.2f ms", r.RenewCPUms), fmt.Sprintf("(%.1f CPU s over the storm, less the idle sessions' share)", r.RenewCPUSeconds))
		if len(r.RenewFailed) > 0 {
			row("failed renewals", tally(r.RenewFailed), "")
		}
		pair("renew_sessions", r.RenewOffered)
		pair("renewed", r.Renewed)
		pair("renew_failed", failed)
		pair("renew_lost", r.RenewLost)
		pair("renew_s", fmt.Sprintf("%.1f", r.RenewSeconds))
		pair("renew_window_s", fmt.Sprintf("%.0f", r.RenewWindow.Seconds()))
		pair("renew_p99_ms", r.RenewP99.Milliseconds())
		pair("renew_cpu_ms", fmt.Sprintf("%.2f", r.RenewCPUms))
	}
	if r.StormSeconds > 0 {
		row(fmt.Sprintf("reconnect storm, %d sessions", r.Storm), fmt.Sprintf("%.1f s", r.StormSeconds), fmt.Sprintf("(%d retries, %d failed)", r.StormRetries, r.StormFailed))
		pair("storm_sessions", r.Storm)
		pair("storm_s", fmt.Sprintf("%.1f", r.StormSeconds))
	}
	if len(r.CycleRSS) > 0 {
		var rs, rates []string
		for i, m := range r.CycleRSS {
			rs = append(rs, fmt.Sprintf("%.0f", float64(m)/(1<<20)))
			rates = append(rates, fmt.Sprintf("%.0f", r.CycleRates[i]))
		}
		last := r.CycleRSS[len(r.CycleRSS)-1]
		per, _ := perSession(last, r.BaselineRSS, r.HeldAfterCycles)
		growth := float64(last) / float64(r.CycleRSS[0])
		cycles := "cycles"
		if len(r.CycleRSS) == 1 {
			cycles = "cycle"
		}
		row(fmt.Sprintf("gateway RSS after %d reconnect %s", len(r.CycleRSS), cycles), mib(last),
			fmt.Sprintf("%.1f KiB/session %s; per cycle %s MiB (ratchet x%.2f, goal <= %.2f) %s", float64(per)/1024, verdict(per <= goalPerSession), strings.Join(rs, " "), growth, goalRatchet, verdict(growth <= goalRatchet)))
		row("reconnects/s per cycle", strings.Join(rates, " "), fmt.Sprintf("(%d sessions held after)", r.HeldAfterCycles))
		pair("cycles", len(r.CycleRSS))
		pair("cycles_rss_mib", fmt.Sprintf("%.1f", float64(last)/(1<<20)))
		pair("cycles_rss_per_session_kib", fmt.Sprintf("%.1f", float64(per)/1024))
	}
	if r.ClosedRSS > 0 {
		row("gateway RSS after every session closed", mib(r.ClosedRSS), "")
	}
	if r.BareRate > 0 && r.GatewayRate > 0 {
		ratio := r.GatewayRate / r.BareRate
		row("new sessions/s: gateway / bare TLS", fmt.Sprintf("%.0f / %.0f", r.GatewayRate, r.BareRate), fmt.Sprintf("ratio %.2f (goal >= %.1f) %s; %d ops each, %d failed", ratio, goalChurnRatio, verdict(ratio >= goalChurnRatio), r.ChurnOps, r.ChurnFailed))
		pair("gateway_sessions_per_s", fmt.Sprintf("%.0f", r.GatewayRate))
		pair("bare_sessions_per_s", fmt.Sprintf("%.0f", r.BareRate))
		pair("churn_ratio", fmt.Sprintf("%.2f", ratio))
		if r.BareCPUms > 0 && r.GatewayCPUms > 0 {
			row("server CPU per new session: gateway / bare", fmt.Sprintf("%.2f / %.2f ms", r.GatewayCPUms, r.BareCPUms), fmt.Sprintf("(x%.2f)", r.GatewayCPUms/r.BareCPUms))
			pair("gateway_cpu_ms_per_session", fmt.Sprintf("%.2f", r.GatewayCPUms))
			pair("bare_cpu_ms_per_session", fmt.Sprintf("%.2f", r.BareCPUms))
		}
	}
	if r.PeakRSS > 0 {
		row("gateway peak RSS", mib(r.PeakRSS), "")
		pair("peak_rss_mib", fmt.Sprintf("%.1f", float64(r.PeakRSS)/(1<<20)))
	}
	if len(r.Lost) > 0 {
		row("sessions the gateway ended", tally(r.Lost), "")
	}
	if len(r.Errors) > 0 {
		row("failed connect attempts", tally(r.Errors), "")
	}
	if r.Aborted != "" {
		fmt.Fprintf(&b, "  run stopped early: %s\n", r.Aborted)
		pair("aborted", fmt.Sprintf("%q", r.Aborted))
	}
	return b.String() + "scale " + strings.TrimSpace(kv.String()) + "\n"
}

// tally prints counts by key, largest first.
func tally(m map[string]int) string {
	keys := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		if m[a] != m[b] {
			return m[b] - m[a]
		}
		return strings.Compare(a, b)
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}
