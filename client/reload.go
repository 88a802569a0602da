package client

// Reload: SIGHUP (`systemctl reload sallyport-client@NAME` sends it)
// re-reads the profile, as the gateway does with its own file.
//
// What changes in place: the gateways (server, servers), server_name, the
// TLS files and pin (CA, certificate, key) and the reconnect delays. A new
// CA, certificate, pin or server_name, or the removal of the gateway in
// use, ends the session and reconnects at once, so the gateway is verified,
// and the device known, under the new file (between attempts, the next
// one is made at once instead of after its wait: a refused device's
// refused_delay); a new gateway list or new delays alone keep the session. With the kill switch on, the gateways it
// lets through follow the new list at once.
//
// Everything else is what the running client built at `up`: the TUN device
// and driver, the routing table and fwmark, CPUs, the kill switch and
// allow_lan settings, the admin socket and group, the metrics listener.
// Those keep their running values and the log names each one that changed
// and needs a restart. A file that does not load (or whose certificate is
// out of its validity) changes nothing: the error is logged and the running
// configuration stays.

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/sallyport/sallyport/internal/tomlconf"
	"github.com/sallyport/sallyport/tunnel"
)

// liveConfig is what a reload changes in place (guarded by Client.mu; the
// TLS material is Client.matp).
type liveConfig struct {
	servers   []string
	serverNm  string
	tls       TLSConfig
	reconnect ReconnectConfig
	// files is a digest of the CA, the device certificate and the pin in
	// force, and name the gateway name checked (server_name, or the host
	// of the first gateway): when either changes the session is renewed.
	files [32]byte
	name  string
}

func liveOf(cfg *Config, m *material) liveConfig {
	l := liveConfig{servers: slices.Clone(cfg.Servers), serverNm: cfg.ServerName, tls: cfg.TLS, reconnect: cfg.Reconnect}
	if m != nil {
		h := sha256.New()
		if ca, err := readPEM(cfg.TLS.CA, cfg.TLS.CAPEM, "tls.ca"); err == nil {
			h.Write(ca)
		}
		h.Write(m.leaf.Raw)
		fmt.Fprintf(h, "\x00%s", m.pin)
		h.Sum(l.files[:0])
		l.name = m.srvName
	}
	return l
}

// errReload ends a session that a reload hangs up (conn.hangUp): the
// reconnect that follows is the reload's, at once, not a lost connection.
var errReload = errors.New("reconnecting to apply the reloaded profile")

// servers are the gateways to dial, in order.
func (c *Client) servers() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inPlace.servers
}

// reconnect is the backoff in force.
func (c *Client) reconnect() ReconnectConfig {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inPlace.reconnect
}

// Reload re-reads the profile the client was started from and applies
// what can change while it runs (see the file comment); trigger says who
// asked ("SIGHUP"). It returns the error that kept the running
// configuration, if any (also logged).
func (c *Client) Reload(trigger string) error {
	cfg, err := LoadConfig(c.cfg.Path)
	var mat *material
	if err == nil {
		mat, err = cfg.loadMaterial()
	}
	if err == nil {
		if err = checkValidity(mat.leaf, cfg.certSource(), time.Now()); err != nil && mat.closer != nil {
			mat.closer.Close()
		}
	}
	if err != nil {
		c.log.Error("reload failed; the running configuration stays", "trigger", trigger, "err", err)
		return err
	}
	restart := changedKeys(c.cfg, cfg, "tunnel", "admin", "metrics")
	live := liveOf(cfg, mat)
	c.mu.Lock()
	old, current, connected := c.inPlace, c.server, c.connected
	c.inPlace = live
	ns := c.net
	c.mu.Unlock()
	if old := c.matp.Swap(mat); old != nil && old.closer != nil && old.closer != mat.closer {
		old.closer.Close()
	}
	c.dropPrevious() // a renewal's fallback pair gives way to the file's

	var applied []string
	if !slices.Equal(old.servers, live.servers) {
		applied = append(applied, "servers")
		if ns != nil {
			ns.setServers(live.servers) // the kill switch lets the new gateways through
		}
	}
	if old.serverNm != live.serverNm {
		applied = append(applied, "server_name")
	}
	applied = append(applied, tomlconf.Changed("tls", old.tls, live.tls)...)
	if old.files != live.files && !slices.ContainsFunc(applied, func(k string) bool { return strings.HasPrefix(k, "tls.") }) {
		// The same file names (or none: a bundle), new certificates in them.
		applied = append(applied, "tls (file contents)")
	}
	applied = append(applied, tomlconf.Changed("reconnect", old.reconnect, live.reconnect)...)
	if len(applied) == 0 {
		applied = []string{"nothing changed"}
	}
	c.log.Info("configuration reloaded", "trigger", trigger, "applied", strings.Join(applied, ","))
	if len(restart) > 0 {
		c.log.Warn("these keys changed but apply only when the client restarts (systemctl restart sallyport-client@"+Profile(c.cfg.Path)+
			", or sallyport down then up); their running values stay", "keys", strings.Join(restart, ","))
	}
	why := ""
	switch {
	case old.files != live.files || old.name != live.name:
		why = "the CA, certificate, pin or server_name changed"
	case current != "" && !slices.Contains(live.servers, current):
		why = "the gateway in use (" + current + ") is no longer in servers"
	}
	if why == "" {
		return nil
	}
	if cn := c.cur.Load(); cn != nil && connected {
		c.log.Info("reconnecting to apply the reload", "why", why)
		cn.closeErr.CompareAndSwap(nil, &errReload)
		cn.hangUp(tunnel.ReasonClientReload)
		return nil
	}
	// Between attempts (a refusal may wait refused_delay): try the new
	// file now, not when the old one's wait ends.
	select {
	case c.retry <- struct{}{}:
		c.log.Info("trying the gateway now with the reloaded profile", "why", why)
	default:
	}
	return nil
}

// changedKeys lists the keys of the given tables (top-level struct fields
// of Config by their toml names) whose values differ between a and b.
func changedKeys(a, b *Config, tables ...string) []string {
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	var out []string
	for i := 0; i < va.NumField(); i++ {
		f := va.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if slices.Contains(tables, name) {
			out = append(out, tomlconf.Changed(name, va.Field(i).Interface(), vb.Field(i).Interface())...)
		}
	}
	return out
}

// setServers changes the gateways the kill switch lets through, and puts
// a kill switch that is on in place again with them.
func (n *netState) setServers(servers []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.servers = slices.Clone(servers)
	if n.kill {
		if err := n.installKill(); err != nil {
			n.log.Error("kill switch: could not let the new gateways through", "err", err)
		}
	}
}

// hangUp ends the session from outside its goroutines, on either path: it
// tells the gateway why (a Close frame, within a second) and closes the
// connection (the TLS stream's, or the datagram path's QUIC connection),
// which ends the session's readers.
func (cn *conn) hangUp(reason tunnel.Reason) {
	msg, _ := tunnel.EncodeClose(tunnel.CloseMsg{Reason: string(reason)})
	told := cn.w.Finish(tunnel.FrameClose, msg, time.Second) == nil
	if cn.tls == nil {
		cn.hangup()
		return
	}
	if !told {
		cn.drop(nil) // a gateway that does not read would hold tls.Conn.Close 5 s
	}
	cn.tls.Close()
}
