package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/sallyport/sallyport/pki/ca"
)

// maxDevices bounds --devices (the tunnel pool and the file descriptor
// limits of one gateway are the real limits well before this).
const maxDevices = 100000

// issueBatch is how many devices one IssueDevices call (one lock hold)
// makes; the rate of each batch is printed, so a store that slows down as
// it grows shows.
const issueBatch = 1000

func deviceName(prefix string, i int) string { return fmt.Sprintf("%s%05d", prefix, i) }

func runIssue(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("scale issue", flag.ContinueOnError)
	dir := fs.String("dir", "", "PKI directory made by `sallyport pki init` (required)")
	n := fs.Int("devices", 0, "number of devices to issue (required)")
	keyName := fs.String("key", "ecdsa", "device key type: ecdsa (P-256) or ed25519")
	prefix := fs.String("prefix", "scale-", "device name prefix (names are PREFIX00000, PREFIX00001, ...)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *n <= 0 || *n > maxDevices {
		return fmt.Errorf("--dir and --devices (1..%d) are required", maxDevices)
	}
	kt, err := ca.ParseKeyType(*keyName)
	if err != nil {
		return err
	}
	if kt == ca.KeyRSA3072 {
		return errors.New("--key rsa3072 would take minutes per thousand devices; use ecdsa or ed25519")
	}
	p := ca.New(*dir)
	start := time.Now()
	var rates []float64
	for first := 0; first < *n; first += issueBatch {
		last := min(first+issueBatch, *n)
		opts := make([]ca.IssueOptions, 0, last-first)
		for i := first; i < last; i++ {
			opts = append(opts, ca.IssueOptions{Name: deviceName(*prefix, i), User: "load", Groups: []string{"scale"}, Key: kt})
		}
		t := time.Now()
		if _, err := p.IssueDevices(opts); err != nil {
			return fmt.Errorf("issue devices %d..%d: %w", first, last-1, err)
		}
		rates = append(rates, float64(last-first)/time.Since(t).Seconds())
	}
	el := time.Since(start)
	fmt.Fprintf(stdout, "issued=%d seconds=%.1f rate=%.0f first_batch_rate=%.0f last_batch_rate=%.0f key=%s\n",
		*n, el.Seconds(), float64(*n)/el.Seconds(), rates[0], rates[len(rates)-1], kt)
	return nil
}
