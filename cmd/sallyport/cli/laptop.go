package cli

// The laptop's commands, with wg-quick's habits: `up NAME`, `down NAME`
// and `status NAME` act on the profile /etc/sallyport/NAME.toml (or a
// file: a path, or -c FILE); `status` alone shows every profile that is
// up; `down` of a tunnel that is not up says so and exits 0. Exit
// statuses of status: 0 when it could tell (also when nothing is up, as
// `wg show` does), 3 when the profile it was asked about is not up (as
// `systemctl status` does for a unit that is not running), 1 on an error.

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/spf13/cobra"

	"github.com/sallyport/sallyport/client"
	"github.com/sallyport/sallyport/internal/adminsock"
	"github.com/sallyport/sallyport/internal/cmdutil"
)

// exitNotUp is `status NAME`'s exit status for a profile that is not up
// (LSB "program is not running", as systemctl status).
const exitNotUp = 3

func upCmd() *cobra.Command {
	var f daemonFlags
	cmd := &cobra.Command{
		Use:   "up [NAME | -c FILE]",
		Short: "bring a tunnel up on this laptop",
		Long: `Brings the tunnel of profile NAME up (the file /etc/sallyport/NAME.toml, made by
"sallyport pki bundle"; or a file given as a path or with -c) and keeps it up,
reconnecting with backoff, until SIGINT/SIGTERM or "sallyport down NAME"; then
removes its TUN device, routes, kill switch and DNS settings. Several
profiles can be up at once.

SIGHUP ("systemctl reload sallyport-client@NAME") re-reads the file: the
gateways, server_name, the TLS files and the reconnect delays change in place
(a new CA, certificate, pin or server_name reconnects at once); the log names
the keys that need a restart (tunnel, admin, metrics).`,
		Example: "  sudo sallyport up acme                 # /etc/sallyport/acme.toml\n  sudo sallyport up -c ./alice-laptop.toml",
		Args:    profileArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := f.logger(cmd, "")
			if err != nil {
				return err
			}
			var cfg *client.Config
			switch {
			case len(args) == 1 && f.config != "":
				return cmdutil.Usagef("give a profile NAME or -c FILE, not both")
			case len(args) == 1:
				cfg, err = client.LoadProfile(args[0])
			case f.config != "":
				cfg, err = client.LoadConfig(f.config)
			default:
				return cmdutil.Usagef("name a profile (sallyport up NAME reads %s/NAME.toml) or give -c FILE%s", client.ConfigDir(), profilesHint())
			}
			if err != nil {
				return f.fail(log, err)
			}
			c, err := client.New(cfg, log)
			if err != nil {
				return f.fail(log, err)
			}
			// READY comes when the device is in place; the status line
			// (systemctl status) says whether a session is up.
			c.OnState = func(_ bool, line string) { _, _ = daemon.SdNotify(false, "STATUS="+line) }
			return f.fail(log, runDaemon(func() { _ = c.Reload("SIGHUP") }, c.Run))
		},
	}
	f.add(cmd, "", "profile file, instead of NAME")
	return cmd
}

// profileArgs allows at most one positional argument, the profile.
func profileArgs(_ *cobra.Command, args []string) error {
	if len(args) > 1 {
		return cmdutil.Usagef("unexpected argument %q (one profile at a time)", args[1])
	}
	return nil
}

// profilesHint lists the profiles there are, for a message.
func profilesHint() string {
	if p := client.Profiles(); len(p) > 0 {
		return "; profiles: " + strings.Join(p, ", ")
	}
	return ""
}

// laptopFlags pick the client `status` and `down` talk to: the profile
// NAME (an argument), -c FILE, or --socket.
type laptopFlags struct {
	socket, config string
}

func (f *laptopFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.config, "config", "c", "", "profile file, instead of NAME")
	cmd.Flags().StringVar(&f.socket, "socket", "", "admin socket of the running client, instead of NAME")
}

// target is one client `status` or `down` acts on.
type target struct {
	name   string         // the profile, for messages
	socket string         // its admin socket
	cfg    *client.Config // its config, when it could be read
}

// named is the client the command line names, nil if it names none.
func (f *laptopFlags) named(args []string) (*target, error) {
	n := len(args)
	if f.config != "" {
		n++
	}
	if f.socket != "" {
		n++
	}
	switch {
	case n > 1:
		return nil, cmdutil.Usagef("give one of NAME, -c FILE or --socket")
	case f.socket != "":
		name := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f.socket), "client-"), ".sock")
		return &target{name: name, socket: f.socket}, nil
	case f.config != "":
		return loadTarget(f.config, true)
	case len(args) == 1:
		return loadTarget(args[0], false)
	}
	return nil, nil
}

// loadTarget finds the socket of profile arg (or of the file arg). A user
// who may not read the profile (it holds the device key) still reaches a
// bundle's client, whose socket is named after the profile.
func loadTarget(arg string, file bool) (*target, error) {
	path := arg
	if !file {
		var err error
		if path, err = client.ProfilePath(arg); err != nil {
			return nil, cmdutil.Usagef("%v", err)
		}
	}
	t := &target{name: client.Profile(path)}
	var cfg *client.Config
	var err error
	if file {
		cfg, err = client.LoadConfig(path)
	} else {
		cfg, err = client.LoadProfile(arg)
	}
	switch {
	case err == nil:
		t.cfg, t.socket = cfg, cfg.Admin.Socket
	case errors.Is(err, os.ErrPermission):
		t.socket = client.DefaultSocket(t.name)
	default:
		return nil, err
	}
	return t, nil
}

// notUp reports whether err from the admin socket means no client runs
// there (no socket, or nobody listening on it).
func notUp(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED)
}

// upClient is a client that answered.
type upClient struct {
	socket string
	status client.Status
}

// running asks every client it can find: the sockets in RuntimeDir and
// those the profiles in ConfigDir name (a profile this user may not read,
// a bundle holding a key, by its default socket). What it may not look
// into or use is returned in denied: the runtime directory itself (the
// client unit's is root's, 0700), or a socket. A caller that found no
// client but was denied cannot tell whether a tunnel is up.
func running() (up []upClient, denied []string) {
	dir := client.RuntimeDir()
	socks, _ := filepath.Glob(filepath.Join(dir, "client-*.sock"))
	dirDenied := false
	if _, err := os.ReadDir(dir); errors.Is(err, os.ErrPermission) {
		// Glob says nothing of it: "no sockets" would read as "nothing up".
		dirDenied = true
		denied = append(denied, dir)
	}
	for _, name := range client.Profiles() {
		sock := ""
		cfg, err := client.LoadProfile(name)
		switch {
		case err == nil:
			sock = cfg.Admin.Socket
		case errors.Is(err, os.ErrPermission):
			sock = client.DefaultSocket(name)
		}
		if sock != "" && !slices.Contains(socks, sock) {
			socks = append(socks, sock)
		}
	}
	for _, s := range socks {
		var st client.Status
		err := adminsock.CallTimeout(s, adminsock.Request{Cmd: "status"}, &st, 5*time.Second)
		switch {
		case err == nil:
			up = append(up, upClient{socket: s, status: st})
		case errors.Is(err, os.ErrPermission) && !(dirDenied && filepath.Dir(s) == dir):
			denied = append(denied, s)
		}
	}
	sort.Slice(up, func(i, j int) bool { return up[i].status.Profile < up[j].status.Profile })
	return up, denied
}

func statusCmd() *cobra.Command {
	var f laptopFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [NAME]",
		Short: "show the laptop's tunnels",
		Long: `Shows a tunnel: state, server, addresses, routes, DNS, traffic, certificate.
Without NAME, every profile that is up, one after the other ("no tunnel is up"
when none is). Exit status: 0 when it could tell, also when nothing is up; 3
when the profile NAME is not up (as systemctl status); 1 on an error. --json
prints one object for NAME, a list without it.`,
		Example: "  sallyport status\n  sallyport status acme\n  sallyport status --json",
		Args:    profileArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := f.named(args)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if t == nil {
				return statusAll(w, asJSON)
			}
			var st client.Status
			if err := adminsock.Call(t.socket, adminsock.Request{Cmd: "status"}, &st); err != nil {
				if !notUp(err) {
					return err
				}
				if !asJSON {
					fmt.Fprintf(w, "%s: not up\n", t.name)
				}
				return cmdutil.ExitError{Code: exitNotUp}
			}
			if asJSON {
				return printJSON(w, st)
			}
			return printClientStatus(w, st)
		},
	}
	f.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// statusAll prints every client that is up.
func statusAll(w io.Writer, asJSON bool) error {
	up, denied := running()
	if len(up) == 0 && len(denied) > 0 {
		return deniedError(denied)
	}
	if asJSON {
		all := make([]client.Status, len(up))
		for i, u := range up {
			all[i] = u.status
		}
		return printJSON(w, all)
	}
	if len(up) == 0 {
		fmt.Fprintf(w, "no tunnel is up (start one with: sudo sallyport up NAME%s)\n", profilesHint())
		return nil
	}
	for i, u := range up {
		if i > 0 {
			fmt.Fprintln(w)
		}
		if err := printClientStatus(w, u.status); err != nil {
			return err
		}
	}
	if len(denied) > 0 {
		fmt.Fprintf(w, "\n(not shown: %s; permission denied)\n", strings.Join(denied, ", "))
	}
	return nil
}

// deniedError is what status and down say when every client they could
// have asked was out of this user's reach: they cannot tell whether a
// tunnel is up, so they say neither "up" nor "not up".
func deniedError(denied []string) error {
	return fmt.Errorf("cannot tell which tunnels are up: %s: permission denied (run it with sudo, or as a member of the group set by [admin] group in the profile)",
		strings.Join(denied, ", "))
}

func printClientStatus(w io.Writer, st client.Status) error {
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
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if st.Profile != "" {
		fmt.Fprintf(tw, "profile:\t%s (%s)\n", st.Profile, st.Config)
	}
	fmt.Fprintf(tw, "state:\t%s\n", state)
	fmt.Fprintf(tw, "device:\t%s\n", st.Device)
	server := dash(st.Server)
	if !st.Connected && st.Trying != "" {
		// While reconnecting: the gateway it is trying, and the last one
		// it had a session with when that is another.
		server = st.Trying + " (trying)"
		if st.Server != "" && st.Server != st.Trying {
			server += "; last connected to " + st.Server
		}
	}
	fmt.Fprintf(tw, "server:\t%s\n", server)
	if st.Path != "" {
		path := map[string]string{client.PathQUIC: "datagram (CONNECT-IP over QUIC)", client.PathTLS: "TLS stream"}[st.Path]
		if path == "" {
			path = st.Path
		}
		if st.PathReason != "" {
			path += ": " + st.PathReason
		}
		if st.MTU > 0 {
			path += fmt.Sprintf(" (MTU %d)", st.MTU)
		}
		fmt.Fprintf(tw, "path:\t%s\n", path)
	}
	fmt.Fprintf(tw, "address:\t%s\n", dash(strings.Join(slices.DeleteFunc([]string{st.Address, st.Address6}, func(a string) bool { return a == "" }), ", ")))
	fmt.Fprintf(tw, "routes:\t%s\n", dash(strings.Join(st.Routes, ", ")))
	dns := dash(strings.Join(st.DNS, ", "))
	switch {
	case st.DNSMode != "":
		dns += " (via " + st.DNSMode + ")"
	case len(st.DNS) > 0:
		dns += " (not applied; see the log)"
	}
	fmt.Fprintf(tw, "dns:\t%s\n", dns)
	// What the kernel has now, read back (it outlives a reconnect).
	in := st.Installed
	fmt.Fprintf(tw, "table %d:\t%s\n", in.Table, dash(strings.Join(in.Routes, ", ")))
	fmt.Fprintf(tw, "rules:\t%s\n", dash(strings.Join(in.Rules, "; ")))
	ks := "off"
	if in.KillSwitch {
		ks = "on (traffic outside the tunnel is blocked)"
	}
	fmt.Fprintf(tw, "kill switch:\t%s\n", ks)
	if st.InstallErr != "" {
		fmt.Fprintf(tw, "read-back error:\t%s\n", st.InstallErr)
	}
	if !st.Since.IsZero() {
		fmt.Fprintf(tw, "since:\t%s\n", st.Since.Format(time.RFC3339))
	}
	fmt.Fprintf(tw, "traffic:\t%s in, %s out\n", humanBytes(st.BytesIn), humanBytes(st.BytesOut))
	warn := ""
	if st.CertDaysLeft < 14 && !st.Renewal {
		warn = "  WARNING: renew soon"
	}
	fmt.Fprintf(tw, "certificate:\texpires %s (%d days left)%s\n", st.CertNotAfter.Format("2006-01-02"), st.CertDaysLeft, warn)
	if st.CertSerial != "" {
		fmt.Fprintf(tw, "serial:\t%s\n", st.CertSerial)
	}
	switch {
	case st.Renewal:
		line := "renews itself at " + st.RenewAt.Format("2006-01-02 15:04")
		if st.Renewals > 0 {
			line += fmt.Sprintf(" (renewed %d time(s) since up, last %s)", st.Renewals, st.RenewedAt.Format("2006-01-02 15:04"))
		}
		fmt.Fprintf(tw, "renewal:\t%s\n", line)
	case st.Renewals > 0:
		fmt.Fprintf(tw, "renewal:\trenewed %d time(s) since up, last %s\n", st.Renewals, st.RenewedAt.Format("2006-01-02 15:04"))
	}
	if st.RenewError != "" {
		fmt.Fprintf(tw, "renewal error:\t%s\n", st.RenewError)
	}
	if st.KeyLocation != "" {
		fmt.Fprintf(tw, "device key:\t%s\n", keyWords(st.KeyKind, st.KeyLocation))
	}
	return tw.Flush()
}

func downCmd() *cobra.Command {
	var f laptopFlags
	cmd := &cobra.Command{
		Use:   "down [NAME]",
		Short: "take a tunnel down",
		Long: `Takes the tunnel of profile NAME down and removes its TUN device, routes,
rules, kill switch and DNS settings. Without NAME, the one tunnel that is up.
When none is up it says so and exits 0, after removing what a client that
crashed or was killed left behind (its kill switch would keep the laptop
offline; its routing rules and routes; its DNS, restored as it was): for
NAME's profile, or for every profile in /etc/sallyport.`,
		Example: "  sudo sallyport down acme\n  sudo sallyport down",
		Args:    profileArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := f.named(args)
			if err != nil {
				return err
			}
			if t == nil {
				up, denied := running()
				switch len(up) {
				case 0:
					if len(denied) > 0 {
						return deniedError(denied)
					}
					return downNothing(cmd)
				case 1:
					t = &target{name: up[0].status.Profile, socket: up[0].socket}
				default:
					names := make([]string, len(up))
					for i, u := range up {
						names[i] = u.status.Profile
					}
					return cmdutil.Usagef("%d tunnels are up (%s): say which, e.g. sallyport down %s", len(up), strings.Join(names, ", "), names[0])
				}
			}
			return downOne(cmd, t)
		},
	}
	f.add(cmd)
	return cmd
}

// downOne takes t down, or cleans up after it when it is not running.
func downOne(cmd *cobra.Command, t *target) error {
	w := cmd.OutOrStdout()
	err := adminsock.Call(t.socket, adminsock.Request{Cmd: "down"}, nil)
	if notUp(err) {
		fmt.Fprintf(w, "%s: not up\n", t.name)
		cfg := t.cfg
		if cfg == nil {
			// Only a socket: what a client on sp0 with the default table left.
			cfg = &client.Config{Tunnel: client.TunnelConfig{Device: "sp0", Table: client.DefaultTable}}
		}
		return removeLeftovers(cmd, t.name, cfg)
	}
	if err != nil {
		return err
	}
	// Wait for the client to finish its cleanup: the socket goes away last.
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(t.socket); errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(w, "%s: tunnel down\n", t.name)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(w, "%s: down requested; the client is still cleaning up\n", t.name)
	return nil
}

// downNothing is `down` with no tunnel up: it says so, and removes what
// crashed clients of the profiles (and one on sp0) left behind.
func downNothing(cmd *cobra.Command) error {
	fmt.Fprintln(cmd.OutOrStdout(), "no tunnel is up")
	cfgs := []*client.Config{{Tunnel: client.TunnelConfig{Device: "sp0", Table: client.DefaultTable}}}
	names := []string{"sp0"}
	for _, name := range client.Profiles() {
		if cfg, err := client.LoadProfile(name); err == nil {
			cfgs, names = append(cfgs, cfg), append(names, name)
		}
	}
	var errs []error
	for i, cfg := range cfgs {
		errs = append(errs, removeLeftovers(cmd, names[i], cfg))
	}
	return errors.Join(errs...)
}

// removeLeftoversFn is client.RemoveLeftovers; tests that must not touch
// the host's routing and firewall replace it.
var removeLeftoversFn = client.RemoveLeftovers

// removeLeftovers removes what a client of cfg that is not running any
// more left behind (kill switch, rules, routes) and says so when there was
// anything.
func removeLeftovers(cmd *cobra.Command, name string, cfg *client.Config) error {
	log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))
	n, err := removeLeftoversFn(cfg, log)
	if errors.Is(err, os.ErrPermission) {
		fmt.Fprintf(cmd.ErrOrStderr(), "%s: could not look for a kill switch a crashed client left behind (%v): run as root\n", name, err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s: removing what a crashed client left behind: %w", name, err)
	}
	if n > 0 {
		fmt.Fprintf(cmd.OutOrStdout(), "%s: removed the kill switch, routing and DNS settings a client that is not running left behind (%d items)\n", name, n)
	}
	return nil
}
