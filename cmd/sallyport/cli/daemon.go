package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	"github.com/sallyport/sallyport/internal/adminsock"
	"github.com/sallyport/sallyport/internal/cmdutil"
	"github.com/sallyport/sallyport/internal/logfmt"
	"github.com/sallyport/sallyport/server"
)

// daemonFlags are the flags `server` and `up` share.
type daemonFlags struct {
	config string
	level  string
	format string
	json   bool // the logger in use writes JSON
}

func (f *daemonFlags) add(cmd *cobra.Command, defCfg, cfgUsage string) {
	cmd.Flags().StringVarP(&f.config, "config", "c", defCfg, cfgUsage)
	cmd.Flags().StringVar(&f.level, "log-level", "info", "log level: debug, info, warn or error")
	cmd.Flags().StringVar(&f.format, "log-format", "", "log format: text (key=value) or json (default: the config's, else text)")
}

// logger writes one line per event to stderr, in --log-format, else
// cfgFormat (the config file's), else text; without its own timestamp
// under the systemd journal (internal/logfmt).
func (f *daemonFlags) logger(cmd *cobra.Command, cfgFormat string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(f.level)); err != nil {
		return nil, cmdutil.Usagef("--log-level %q: use debug, info, warn or error", f.level)
	}
	format := f.format
	if format == "" {
		format = cfgFormat
	} else if err := logfmt.Check(format); err != nil {
		return nil, cmdutil.Usagef("--log-format %q: use text or json", f.format)
	}
	f.json = format == logfmt.JSON
	return logfmt.New(cmd.ErrOrStderr(), format, l)
}

// fail reports err, why the daemon could not start (or stopped), the way
// its logs are written: with JSON logs as one JSON line at level ERROR
// (a log pipeline sees it like any other line) and exit status 1; else
// as the one plain line "sallyport: ..." (cmdutil.Execute). Either way
// with withHint's advice.
func (f *daemonFlags) fail(log *slog.Logger, err error) error {
	if err == nil {
		return nil
	}
	err = withHint(err)
	if !f.json || log == nil {
		return err
	}
	log.Error("cannot start", "error", cmdutil.OneLine(err.Error()))
	return cmdutil.ExitError{Code: 1}
}

func serverCmd() *cobra.Command {
	var f daemonFlags
	cmd := &cobra.Command{
		Use:   "server",
		Short: "run the gateway (and administer a running one)",
		Long: `Runs the gateway. SIGHUP (or a change to the config, CA or CRL file) reloads
the config, CA, CRL and policies and re-checks every live session.`,
		Example: "  sallyport server -c /etc/sallyport/server.toml",
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := f.logger(cmd, "")
			if err != nil {
				return err // a bad flag is a usage error before the config is read
			}
			cfg, err := server.LoadConfig(f.config)
			if err != nil {
				return f.fail(log, err)
			}
			if log, err = f.logger(cmd, cfg.Log.Format); err != nil {
				return err
			}
			srv, err := server.New(cfg, log)
			if err != nil {
				return f.fail(log, err)
			}
			return f.fail(log, runDaemon(func() { srv.Reload("SIGHUP") }, srv.Run))
		},
	}
	f.add(cmd, "/etc/sallyport/server.toml", "gateway config file")
	cmd.AddCommand(serverStatusCmd(), serverKickCmd(), serverReloadCmd(), serverPprofCmd(), serverCheckCmd(), serverDrainCmd())
	return cmd
}

// runDaemon runs fn until SIGINT/SIGTERM, telling systemd when it is ready
// and when it is stopping; hup, if not nil, handles SIGHUP.
func runDaemon(hup func(), fn func(ctx context.Context, ready func()) error) error {
	ctx, stop := signalContext(hup)
	defer stop()
	go func() { <-ctx.Done(); _, _ = daemon.SdNotify(false, daemon.SdNotifyStopping) }()
	return fn(ctx, func() { _, _ = daemon.SdNotify(false, daemon.SdNotifyReady) })
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

// withHint adds to a permission error what would grant it, unless the
// error already says (a capability named, or an admin socket directory it
// may not write: adminsock.DirError): a file the process may not read
// names the file and the user; a privileged TCP port names
// CAP_NET_BIND_SERVICE; anything else (netlink, nftables) CAP_NET_ADMIN.
func withHint(err error) error {
	var de *adminsock.DirError
	if err == nil || !errors.Is(err, os.ErrPermission) || strings.Contains(err.Error(), "CAP_") || errors.As(err, &de) {
		return err
	}
	var pe *fs.PathError
	var op *net.OpError
	switch {
	case errors.As(err, &pe) && pe.Op == "chown":
		return fmt.Errorf("%w (giving %s to a group needs membership in it: SupplementaryGroups= in the unit, or root)", err, pe.Path)
	case errors.As(err, &pe) && pe.Op == "mkdir":
		return fmt.Errorf("%w (uid %d may not create %s: run as root)", err, os.Geteuid(), pe.Path)
	case errors.As(err, &pe) && pe.Path != "/dev/net/tun":
		return fmt.Errorf("%w (%s is not readable by uid %d: run as root, or make it group sallyport mode 0640)", err, pe.Path, os.Geteuid())
	case errors.As(err, &op) && op.Op == "listen" && strings.HasPrefix(op.Net, "tcp"):
		return fmt.Errorf("%w (ports below 1024 need root or CAP_NET_BIND_SERVICE)", err)
	}
	return fmt.Errorf("%w (needs root or CAP_NET_ADMIN)", err)
}
