package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// iperfReport is the part of an `iperf3 -J` TCP report the benchmark uses.
type iperfReport struct {
	End struct {
		SumSent struct {
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
			Retransmits   float64 `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes         float64 `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
			Seconds       float64 `json:"seconds"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// iperfSummary is what iperf-json prints: the receiver's view of a run.
type iperfSummary struct {
	Gbps        float64 // receiver throughput
	Bytes       uint64  // bytes received
	SenderGbps  float64
	Retransmits uint64
}

// maxIperfJSON bounds the report size read (an 8 s run is ~30 KiB).
const maxIperfJSON = 16 << 20

// parseIperf decodes an `iperf3 -J` report; a report carrying an error, or
// without a received sum, is an error.
func parseIperf(data []byte) (iperfSummary, error) {
	var r iperfReport
	if err := json.Unmarshal(data, &r); err != nil {
		return iperfSummary{}, fmt.Errorf("iperf3 JSON: %w", err)
	}
	if r.Error != "" {
		return iperfSummary{}, fmt.Errorf("iperf3 reported: %s", r.Error)
	}
	rcv := r.End.SumReceived
	if rcv.Bytes <= 0 || rcv.BitsPerSecond <= 0 {
		return iperfSummary{}, errors.New("iperf3 JSON: no end.sum_received bytes")
	}
	if rcv.Bytes > 1e18 || r.End.SumSent.Retransmits < 0 || r.End.SumSent.Retransmits > 1e18 {
		return iperfSummary{}, errors.New("iperf3 JSON: values out of range")
	}
	return iperfSummary{
		Gbps:        rcv.BitsPerSecond / 1e9,
		Bytes:       uint64(rcv.Bytes),
		SenderGbps:  r.End.SumSent.BitsPerSecond / 1e9,
		Retransmits: uint64(r.End.SumSent.Retransmits),
	}, nil
}

func runIperfJSON(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: tlsbench iperf-json FILE")
	}
	f, err := os.Open(args[0])
	if err != nil {
		return fmt.Errorf("open iperf3 report: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxIperfJSON+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", args[0], err)
	}
	if len(data) > maxIperfJSON {
		return fmt.Errorf("%s: larger than %d bytes", args[0], maxIperfJSON)
	}
	s, err := parseIperf(data)
	if err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	fmt.Fprintf(stdout, "iperf gbps=%s bytes=%d sender_gbps=%s retransmits=%d\n",
		formatFloat(s.Gbps), s.Bytes, formatFloat(s.SenderGbps), s.Retransmits)
	return nil
}
