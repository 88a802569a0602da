// Command scale is the load generator behind `make scale` (scripts/scale.sh):
// it holds thousands of real device sessions against one gateway and
// measures what a company-sized fleet costs it.
//
//	scale issue --dir PKI --devices N [--key ecdsa|ed25519] [--prefix scale-]
//	scale bare  --listen ADDR --cert C --key K --ca CA
//	scale load  --gateway ADDR --bare ADDR --server-name NAME --dir PKI
//	            --devices N --gateway-pid PID [phase sizes...]
//
// issue makes N device keys and certificates through the PKI's own store
// (pki/ca, one lock for the batch, one index transaction per certificate).
//
// bare is the ceiling for new sessions: a plain crypto/tls TLS 1.3 server
// with the gateway's certificate, the same TLS settings and mandatory
// client certificates verified against the same CA; after the handshake it
// answers the device's hello with a fixed config frame, so a device does
// exactly the same work against it as against the gateway.
//
// load speaks the real protocol with no TUN: mTLS with each device's own
// certificate, a hello, the pushed config, keepalives at the pushed
// interval. Its phases, in order: baseline RSS of the gateway; ramp up to N
// held sessions; RSS per session; gateway CPU while the sessions idle; a
// reconnect storm (the first --storm sessions drop at once and reconnect at
// once); --cycles full reconnect cycles of every device with the RSS after
// each; everything closed; new sessions per second against the bare server
// and the gateway, alternating rounds. It prints one table (and key=value
// lines for scripts). Every loop is bounded in count and by --timeout, and
// the run stops early if the gateway's RSS passes --max-rss-mb.
//
// attack (`make attack`) holds silent and dripping connections without a
// certificate against the gateway and measures how long a valid device
// takes to connect meanwhile (attack.go).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage:
  scale issue --dir PKI --devices N [--key ecdsa|ed25519] [--prefix scale-]
  scale bare  --listen ADDR --cert C --key K --ca CA
  scale load  --gateway ADDR --bare ADDR --server-name NAME --dir PKI --devices N --gateway-pid PID
              [--concurrency 16] [--idle 60s] [--storm 2000] [--cycles 4] [--churn 2000]
              [--source-addrs A,B,...] [--max-rss-mb 14000] [--timeout 9m]
  scale attack --gateway ADDR --server-name NAME --dir PKI [--device NAME] [--laptop-addr A]
              [--attack-addrs A,B,...] [--silent 16] [--drip 16] [--trials 5] [--warmup 3s]
              [--retry 500ms] [--trial-limit 20s] [--reopen-pause 10ms] [--timeout 3m]
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch args[0] {
	case "issue":
		err = runIssue(args[1:], stdout)
	case "bare":
		err = runBare(ctx, args[1:], stderr)
	case "load":
		err = runLoad(ctx, args[1:], stdout, stderr)
	case "attack":
		err = runAttack(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "scale: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "scale %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
