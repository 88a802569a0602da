// Command sallyport is the one binary of the sallyport VPN: the gateway
// (`server`), the laptop client (`up`, `status`, `down`) and the device PKI
// (`pki`). The command tree is in package cli beside it; main only adds the build's
// version and the optional CPU profile.
package main

import (
	"fmt"
	"os"
	"runtime/pprof"

	"github.com/sallyport/sallyport/cmd/sallyport/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	stop := startProfile(os.Getenv("SALLYPORT_CPUPROFILE"))
	code := cli.Main(version, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// startProfile writes a CPU profile of the whole run to path, if set
// (SALLYPORT_CPUPROFILE=/tmp/gw.pprof; used by `make bench`).
func startProfile(path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sallyport: SALLYPORT_CPUPROFILE:", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "sallyport: SALLYPORT_CPUPROFILE:", err)
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}
