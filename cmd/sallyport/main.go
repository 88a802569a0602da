// Command sallyport is the one binary of the sallyport VPN: the gateway
// (`server`), the laptop client (`up`, `status`, `down`) and the device PKI
// (`pki`). It only parses flags, loads configuration and handles signals;
// the work is done in the server, client and pki packages.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/sallyport/sallyport/client"
	"github.com/sallyport/sallyport/internal/adminsock"
	"github.com/sallyport/sallyport/pki/pkicmd"
	"github.com/sallyport/sallyport/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `sallyport — a remote-access VPN over mutual TLS

Usage:
  sallyport server -c server.toml        run the gateway
  sallyport server status [--json]       list device sessions on this gateway
  sallyport server kick DEVICE           end a device's session
  sallyport server reload                re-read config, CA, CRL and policies
  sallyport up -c client.toml            bring the tunnel up on this laptop
  sallyport status [--json]              show the laptop's tunnel
  sallyport down                         take the laptop's tunnel down
  sallyport pki ...                      run the device CA (sallyport pki --help)
  sallyport version

Examples:
  sallyport server -c /etc/sallyport/server.toml
  sallyport up -c ~/acme-vpn.toml
`

func main() {
	stop := startProfile(os.Getenv("SALLYPORT_CPUPROFILE"))
	code := run(os.Args[1:], os.Stdout, os.Stderr)
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

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "server":
		if len(args) > 1 {
			switch args[1] {
			case "status":
				return serverStatus(args[2:], stdout, stderr)
			case "kick":
				return serverKick(args[2:], stdout, stderr)
			case "reload":
				return serverReload(args[2:], stdout, stderr)
			}
		}
		return runServer(args[1:], stderr)
	case "up":
		return runUp(args[1:], stderr)
	case "status":
		return clientStatus(args[1:], stdout, stderr)
	case "down":
		return clientDown(args[1:], stdout, stderr)
	case "pki":
		return pkicmd.Run(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "sallyport", version)
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "sallyport: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// newLogger writes one key=value line per event to stderr.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// signalContext is cancelled on SIGINT/SIGTERM; SIGHUP calls hup.
func signalContext(hup func()) (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case sig := <-ch:
				if sig == syscall.SIGHUP {
					if hup != nil {
						hup()
					}
					continue
				}
				cancel()
			}
		}
	}()
	return ctx, func() { signal.Stop(ch); close(done); cancel() }
}

func sdReady() {
	_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
}

func sdStopping() {
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
}

// parseDaemon parses the flags `server` and `up` share (-c, --log-level)
// and builds the logger; a non-zero code means exit with it.
func parseDaemon(name, help, defCfg, cfgUsage string, args []string, stderr io.Writer) (cfgPath string, log *slog.Logger, code int) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("c", defCfg, cfgUsage)
	level := fs.String("log-level", "info", "debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprint(stderr, help, "\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return "", nil, 2
	}
	log, err := newLogger(stderr, *level)
	if err != nil {
		fmt.Fprintln(stderr, "sallyport:", err)
		return "", nil, 2
	}
	return *cfg, log, 0
}

// runDaemon runs fn until SIGINT/SIGTERM, telling systemd when it is ready
// and when it is stopping; hup, if not nil, handles SIGHUP.
func runDaemon(log *slog.Logger, what string, hup func(), fn func(ctx context.Context, ready func()) error) int {
	ctx, stop := signalContext(hup)
	defer stop()
	go func() { <-ctx.Done(); sdStopping() }()
	if err := fn(ctx, sdReady); err != nil {
		log.Error(what+" failed", "err", err)
		return 1
	}
	return 0
}

func runServer(args []string, stderr io.Writer) int {
	cfgPath, log, code := parseDaemon("sallyport server",
		"Usage: sallyport server -c server.toml\n\nRuns the gateway. SIGHUP (or a change to the config, CA or CRL file) reloads\nthe config, CA, CRL and policies and re-checks every live session.\n\nExample:\n  sallyport server -c /etc/sallyport/server.toml\n",
		"/etc/sallyport/server.toml", "gateway config file", args, stderr)
	if code != 0 {
		return code
	}
	cfg, err := server.LoadConfig(cfgPath)
	if err != nil {
		log.Error("cannot start gateway", "err", err)
		return 1
	}
	srv, err := server.New(cfg, log)
	if err != nil {
		log.Error("cannot start gateway", "err", err)
		return 1
	}
	return runDaemon(log, "gateway", func() { srv.Reload("SIGHUP") }, srv.Run)
}

func runUp(args []string, stderr io.Writer) int {
	cfgPath, log, code := parseDaemon("sallyport up",
		"Usage: sallyport up -c client.toml\n\nBrings the tunnel up and keeps it up (reconnecting with backoff) until\nSIGINT/SIGTERM or `sallyport down`; then removes the TUN device, routes and DNS.\n\nExample:\n  sudo sallyport up -c acme-vpn.toml\n",
		"client.toml", "client config file (a `sallyport pki bundle` file)", args, stderr)
	if code != 0 {
		return code
	}
	cfg, err := client.LoadConfig(cfgPath)
	if err != nil {
		log.Error("cannot start client", "err", err)
		return 1
	}
	c, err := client.New(cfg, log)
	if err != nil {
		log.Error("cannot start client", "err", err)
		return 1
	}
	return runDaemon(log, "client", nil, c.Run)
}

// socketFlags adds --socket and -c to fs and returns a function that picks
// the admin socket from them.
func socketFlags(fs *flag.FlagSet, isServer bool) func() (string, error) {
	sock := fs.String("socket", "", "admin socket of the running process")
	cfgPath := fs.String("c", "", "config file to read the admin socket from")
	return func() (string, error) {
		if *sock != "" {
			return *sock, nil
		}
		if *cfgPath != "" {
			if isServer {
				cfg, err := server.LoadConfig(*cfgPath)
				if err != nil {
					return "", err
				}
				return cfg.Admin.Socket, nil
			}
			cfg, err := client.LoadConfig(*cfgPath)
			if err != nil {
				return "", err
			}
			return cfg.Admin.Socket, nil
		}
		if isServer {
			return server.DefaultAdminSocket, nil
		}
		return client.DefaultSocket("sp0"), nil
	}
}

// adminCall parses an admin command's flags (--socket, -c, --json), takes
// DEVICE as the one positional argument when withDevice, and sends cmd to
// the running process's admin socket, decoding the reply into out. A
// non-zero code means exit with it (the error is already printed).
func adminCall(name, help string, args []string, isServer, withDevice bool, cmd string, out any, stderr io.Writer) (sock, device string, asJSON bool, code int) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	sockOf := socketFlags(fs, isServer)
	jsonFlag := fs.Bool("json", false, "print JSON")
	fs.Usage = func() {
		fmt.Fprint(stderr, help, "\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return "", "", false, 2
	}
	if withDevice != (fs.NArg() == 1) || fs.NArg() > 1 {
		fs.Usage()
		return "", "", false, 2
	}
	device = fs.Arg(0)
	sock, err := sockOf()
	if err == nil {
		err = adminsock.Call(sock, adminsock.Request{Cmd: cmd, Device: device}, out)
	}
	if err != nil {
		fmt.Fprintln(stderr, "sallyport:", err)
		return "", "", false, 1
	}
	return sock, device, *jsonFlag, 0
}

func serverStatus(args []string, stdout, stderr io.Writer) int {
	var st server.Status
	_, _, asJSON, code := adminCall("sallyport server status",
		"Usage: sallyport server status [--json] [--socket S | -c server.toml]\n\nLists live device sessions.\n\nExample:\n  sallyport server status\n",
		args, true, false, "status", &st, stderr)
	if code != 0 {
		return code
	}
	if asJSON {
		return printJSON(stdout, st)
	}
	fmt.Fprintf(stdout, "gateway %s on %s (%s), up since %s, %d session(s)\n", st.Address, st.Listen, st.Device,
		st.Started.Format(time.RFC3339), len(st.Sessions))
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tUSER\tGROUPS\tADDRESS\tSINCE\tIN\tOUT\tDROPPED (spoofed/policy/no_flow/queue/malformed/congestion)")
	for _, s := range st.Sessions {
		d := s.Dropped
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d/%d/%d/%d/%d\n", s.Device, dash(s.User), dash(strings.Join(s.Groups, ",")),
			s.Address, s.Since.Format("2006-01-02 15:04:05"), humanBytes(s.BytesIn), humanBytes(s.BytesOut),
			d.Spoofed, d.Policy, d.NoFlow, d.QueueFull, d.Malformed, d.Congestion)
	}
	tw.Flush()
	return 0
}

func serverKick(args []string, stdout, stderr io.Writer) int {
	_, device, _, code := adminCall("sallyport server kick",
		"Usage: sallyport server kick DEVICE [--socket S | -c server.toml]\n\nEnds the session of DEVICE (its certificate CN). The device may reconnect;\nrevoke its certificate to keep it out.\n\nExample:\n  sallyport server kick alice-laptop\n",
		args, true, true, "kick", nil, stderr)
	if code != 0 {
		return code
	}
	fmt.Fprintf(stdout, "kicked %s\n", device)
	return 0
}

func serverReload(args []string, stdout, stderr io.Writer) int {
	_, _, _, code := adminCall("sallyport server reload",
		"Usage: sallyport server reload [--socket S | -c server.toml]\n\nRe-reads config, CA, CRL and policies (like SIGHUP) and re-checks live sessions.\n",
		args, true, false, "reload", nil, stderr)
	if code != 0 {
		return code
	}
	fmt.Fprintln(stdout, "reloaded (see the gateway log for the outcome)")
	return 0
}

func clientStatus(args []string, stdout, stderr io.Writer) int {
	var st client.Status
	_, _, asJSON, code := adminCall("sallyport status",
		"Usage: sallyport status [--json] [--socket S | -c client.toml]\n\nShows the laptop's tunnel: server, address, routes, traffic, certificate.\n\nExample:\n  sallyport status -c acme-vpn.toml\n",
		args, false, false, "status", &st, stderr)
	if code != 0 {
		return code
	}
	if asJSON {
		return printJSON(stdout, st)
	}
	state := "connected"
	if !st.Connected {
		state = "reconnecting"
		if st.Message != "" {
			state = st.Message
		} else if st.LastError != "" {
			state += " (" + st.LastError + ")"
		}
		if !st.RetryAt.IsZero() {
			state += fmt.Sprintf(" (next try %s)", st.RetryAt.Local().Format("15:04:05"))
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "state:\t%s\n", state)
	fmt.Fprintf(tw, "device:\t%s\n", st.Device)
	fmt.Fprintf(tw, "server:\t%s\n", dash(st.Server))
	fmt.Fprintf(tw, "address:\t%s\n", dash(st.Address))
	fmt.Fprintf(tw, "routes:\t%s\n", dash(strings.Join(st.Routes, ", ")))
	fmt.Fprintf(tw, "dns:\t%s\n", dash(strings.Join(st.DNS, ", ")))
	if !st.Since.IsZero() {
		fmt.Fprintf(tw, "since:\t%s\n", st.Since.Format(time.RFC3339))
	}
	fmt.Fprintf(tw, "traffic:\t%s in, %s out\n", humanBytes(st.BytesIn), humanBytes(st.BytesOut))
	warn := ""
	if st.CertDaysLeft < 14 {
		warn = "  WARNING: renew soon"
	}
	fmt.Fprintf(tw, "certificate:\texpires %s (%d days left)%s\n", st.CertNotAfter.Format("2006-01-02"), st.CertDaysLeft, warn)
	tw.Flush()
	return 0
}

func clientDown(args []string, stdout, stderr io.Writer) int {
	sock, _, _, code := adminCall("sallyport down",
		"Usage: sallyport down [--socket S | -c client.toml]\n\nTakes the tunnel down and removes its TUN device, routes and DNS.\n\nExample:\n  sallyport down -c acme-vpn.toml\n",
		args, false, false, "down", nil, stderr)
	if code != 0 {
		return code
	}
	// Wait for the client to finish its cleanup: the socket goes away last.
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(sock); errors.Is(err, os.ErrNotExist) {
			fmt.Fprintln(stdout, "tunnel down")
			return 0
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintln(stdout, "down requested; the client is still cleaning up")
	return 0
}

func printJSON(w io.Writer, v any) int {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return 1
	}
	return 0
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
