package client

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/sallyport/sallyport/internal/atomicfile"
)

// resolvConf manages /etc/resolv.conf on a laptop where systemd-resolved
// does not run. set saves the original once (the backup survives a crash
// and a reboot, so a later restore still finds it) and writes the tunnel's
// resolvers and search domains in front of the original's; restore puts the
// original back, unless someone else has rewritten the file meanwhile (a
// DHCP client, the admin), in which case their file stays.
type resolvConf struct {
	path   string // the live file, /etc/resolv.conf
	backup string // the original, in the state directory
	dev    string
}

// marker is the first line of a file sallyport wrote, naming the device.
func (r resolvConf) marker() string { return "# sallyport: DNS of tunnel " + r.dev + "\n" }

// absent is the backup's content when there was no resolv.conf.
const absentMarker = "# sallyport: there was no resolv.conf\n"

// maxNameservers is glibc's MAXNS: resolvers past the third are ignored.
const maxNameservers = 3

func (r resolvConf) set(servers []netip.Addr, domains []string) error {
	cur, err := os.ReadFile(r.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read %s: %w", r.path, err)
	}
	if owner := ownerOf(cur); owner != "" && owner != r.dev {
		return fmt.Errorf("%s is managed by sallyport for tunnel %s; not taking it over for %s", r.path, owner, r.dev)
	}
	orig, err := os.ReadFile(r.backup)
	switch {
	case err == nil:
		// A backup from an earlier run (a crash, or a reconnect): it is
		// the original; the live file may be ours.
	case errors.Is(err, fs.ErrNotExist):
		orig = cur
		if cur == nil {
			orig = []byte(absentMarker)
		}
		if err := os.MkdirAll(filepath.Dir(r.backup), 0o700); err != nil {
			return fmt.Errorf("resolv.conf backup: %w", err)
		}
		if err := atomicfile.Write(r.backup, orig, 0o600); err != nil {
			return fmt.Errorf("resolv.conf backup %s: %w", r.backup, err)
		}
	default:
		return fmt.Errorf("read resolv.conf backup %s: %w", r.backup, err)
	}
	if string(orig) == absentMarker {
		orig = nil
	}
	return writeInPlace(r.path, r.render(orig, servers, domains))
}

// render puts servers first (the pushed resolvers answer everything: a
// plain resolv.conf has no per-domain routing), then the original's
// resolvers up to glibc's limit, the pushed domains before the original's
// search list, and keeps the original's other lines.
func (r resolvConf) render(orig []byte, servers []netip.Addr, domains []string) []byte {
	var b bytes.Buffer
	b.WriteString(r.marker())
	b.WriteString("# The original is restored on `sallyport down`.\n")
	n := 0
	for _, s := range servers {
		if n < maxNameservers {
			fmt.Fprintf(&b, "nameserver %s\n", s)
			n++
		}
	}
	search := make([]string, 0, len(domains))
	for _, d := range domains {
		search = append(search, strings.TrimPrefix(d, "~"))
	}
	var rest []string
	for _, line := range strings.Split(string(orig), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case f[0] == "nameserver" && len(f) > 1:
			if n < maxNameservers {
				fmt.Fprintf(&b, "nameserver %s\n", f[1])
				n++
			}
		case (f[0] == "search" || f[0] == "domain") && len(f) > 1:
			search = append(search, f[1:]...)
		default:
			rest = append(rest, line)
		}
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	for _, l := range rest {
		b.WriteString(l + "\n")
	}
	return b.Bytes()
}

// restore puts the original back if the live file is still the one
// sallyport wrote for this device, and drops the backup either way.
// Without a backup there is nothing to do.
func (r resolvConf) restore() error {
	_, err := r.undo()
	return err
}

// undo is restore, and also says whether it put the original back.
func (r resolvConf) undo() (bool, error) {
	orig, err := os.ReadFile(r.backup)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read resolv.conf backup %s: %w", r.backup, err)
	}
	cur, err := os.ReadFile(r.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("read %s: %w", r.path, err)
	}
	restored := ownerOf(cur) == r.dev
	if restored {
		if string(orig) == absentMarker {
			if err := os.Remove(r.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return false, fmt.Errorf("remove %s: %w", r.path, err)
			}
		} else if err := writeInPlace(r.path, orig); err != nil {
			return false, err
		}
	}
	if err := os.Remove(r.backup); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return restored, fmt.Errorf("remove resolv.conf backup: %w", err)
	}
	return restored, nil
}

// ownerOf names the device in a sallyport marker on the file's first line.
func ownerOf(b []byte) string {
	first, _, _ := strings.Cut(string(b), "\n")
	dev, ok := strings.CutPrefix(first, "# sallyport: DNS of tunnel ")
	if !ok {
		return ""
	}
	return strings.TrimSpace(dev)
}

// writeInPlace rewrites path's contents without replacing the file: the
// client's unit can write /etc/resolv.conf only through a bind mount of
// that one file, which a rename would not go through.
func writeInPlace(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
