package cli

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sallyport/sallyport/client"
	"github.com/sallyport/sallyport/internal/adminsock"
	"github.com/sallyport/sallyport/server"
)

// fakeAdmin serves canned answers on a unix socket in a short temp dir, as
// a running gateway or client would, and records the requests.
type fakeAdmin struct {
	sock string
	reqs chan adminsock.Request
}

func newFakeAdmin(t *testing.T, h func(r adminsock.Request) (any, error)) *fakeAdmin {
	t.Helper()
	dir, err := os.MkdirTemp("", "spcli")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeAdmin{sock: filepath.Join(dir, "a.sock"), reqs: make(chan adminsock.Request, 16)}
	s, err := adminsock.Listen(f.sock, func(_ context.Context, r adminsock.Request) (any, error) {
		f.reqs <- r
		return h(r)
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return f
}

// next returns the request the fake received last (it must have received one).
func (f *fakeAdmin) next(t *testing.T) adminsock.Request {
	t.Helper()
	select {
	case r := <-f.reqs:
		return r
	default:
		t.Fatal("no request reached the admin socket")
	}
	return adminsock.Request{}
}

var started = time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)

var gwStatus = server.Status{
	Started: started, Listen: "0.0.0.0:443", Device: "sp0", Address: "10.8.0.1", Address6: "fd00:8::1",
	Refused:    map[string]uint64{"revoked": 2, "first-byte-timeout": 40, "evicted": 7},
	CAs:        map[string]int{"CN=Acme Device CA": 2},
	Handshakes: server.HandshakeStatus{InFlight: 9, WaitingHello: 6, PastHello: 2, Sources: 3, QUICInFlight: 4, Max: 512, MaxPerSource: 32},
	Duplicates: []server.DuplicateStatus{{Device: "alice-laptop", Serial: "1c0ffee0123456789abcdef0123456789", Holder: "198.51.100.7:50123",
		Other: "203.0.113.9:40000", Refused: 5, First: started, Last: started.Add(time.Minute)}},
	Renewal: &server.RenewalStatus{Issuer: "CN=Acme Online Issuer", IssuerNotAfter: started.Add(90 * 24 * time.Hour), Lifetime: "168h0m0s", RenewAt: 2.0 / 3, Renewed: 7, Refused: 1},
	Sessions: []server.SessionStatus{
		{Device: "alice-laptop", User: "alice", Groups: []string{"eng", "ops"}, Address: "10.8.0.2", Address6: "fd00:8::2",
			Since: started.Add(time.Hour), BytesIn: 1536, BytesOut: 3 << 30, Serial: "1c0ffee0123456789abcdef0123456789", Lineage: "15eed0123456789abcdef0123456789ab",
			CertNotAfter: started.Add(7 * 24 * time.Hour), CA: "CN=Acme Device CA", Renewal: true, Renewals: 3,
			Dropped: server.DropStatus{Spoofed: 1, Policy: 2, NoFlow: 3, QueueFull: 4, Malformed: 5, Congestion: 6}},
		{Device: "kiosk", Address: "10.8.0.3", Since: started.Add(2 * time.Hour), BytesIn: 12, Serial: "5eed", Lineage: "5eed",
			CertNotAfter: started.Add(365 * 24 * time.Hour), CA: "CN=Acme Device CA"},
	},
}

func TestServerAdminCommands(t *testing.T) {
	fa := newFakeAdmin(t, func(r adminsock.Request) (any, error) {
		switch {
		case r.Cmd == "status":
			return gwStatus, nil
		case r.Cmd == "kick" && r.Device == "ghost":
			return nil, errors.New(`no session for device "ghost"`)
		case r.Cmd == "kick", r.Cmd == "reload":
			return nil, nil
		}
		return nil, errors.New("unexpected " + r.Cmd)
	})
	// The socket can also come from the gateway's config.
	cfg := filepath.Join(t.TempDir(), "server.toml")
	conf := "[tls]\ncert = \"gw.crt\"\nkey = \"gw.key\"\nclient_ca = \"ca.crt\"\n[tunnel]\nipv4_pool = \"10.8.0.0/24\"\n[[policy]]\nname = \"all\"\nmatch = { cn = [\"*\"] }\nallow = [\"10.0.0.0/8\"]\n[admin]\nsocket = \"" + fa.sock + "\"\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, via := range [][]string{{"--socket", fa.sock}, {"-c", cfg}} {
		code, out, errs := run(append([]string{"server", "status"}, via...)...)
		if code != 0 || errs != "" {
			t.Fatalf("server status %v: exit %d: %s", via, code, errs)
		}
		if r := fa.next(t); r.Cmd != "status" {
			t.Errorf("server status sent %+v", r)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 9 {
			t.Fatalf("server status: %d lines, want header, column names, 2 sessions, the CA count, renewal, the two handshake lines and the duplicate:\n%s", len(lines), out)
		}
		if want := "DUPLICATE: device alice-laptop (serial 1c0ffee012345678…) is in use on two machines: the session from 198.51.100.7:50123 holds it; 5 connection(s) refused, the last from 203.0.113.9:40000 at 2026-11-30T08:01:00Z. One of the two is not the owner's (either may be the copy): sallyport pki revoke 1c0ffee0123456789abcdef0123456789 --reason keyCompromise, then issue the owner a new certificate"; lines[8] != want {
			t.Errorf("duplicate line:\n%s\nwant\n%s", lines[8], want)
		}
		if lines[6] != "handshakes: 9 in flight (6 waiting for their ClientHello, 2 past it and not yet authenticated) from 3 sources, 4 on the datagram path; max 512, 32 per source" ||
			lines[7] != "closed before authentication since start: first-byte-timeout 40, hello-timeout 0, evicted 7, per-source-limit 0, handshakes-full 0" {
			t.Errorf("handshake lines:\n%s\n%s", lines[6], lines[7])
		}
		if lines[4] != "devices under CA CN=Acme Device CA: 2" || !strings.HasPrefix(lines[5], "renewal: issuer CN=Acme Online Issuer (until 2027-02-28T08:00:00Z), lifetime 168h0m0s, renew at 0.67; 7 renewed, 1 refused") {
			t.Errorf("CA and renewal lines:\n%s\n%s", lines[4], lines[5])
		}
		if want := "gateway 10.8.0.1,fd00:8::1 on 0.0.0.0:443 (sp0), up since 2026-11-30T08:00:00Z, 2 session(s)"; lines[0] != want {
			t.Errorf("header %q, want %q", lines[0], want)
		}
		for i, want := range [][]string{
			{"alice-laptop", "alice", "eng,ops", "10.8.0.2,fd00:8::2", "2026-11-30", "09:00:00", "1c0ffee012345678…", "2026-12-07", "08:00Z", "15eed0123456789a…", "1.5", "KiB", "3.0", "GiB", "1/2/3/4/5/6"},
			{"kiosk", "-", "-", "10.8.0.3", "2026-11-30", "10:00:00", "5eed", "2027-11-30", "08:00Z", "(itself)", "12", "B", "0", "B", "0/0/0/0/0/0"},
		} {
			if got := strings.Fields(lines[2+i]); !reflect.DeepEqual(got, want) {
				t.Errorf("session row %d: %q, want %q", i, got, want)
			}
		}
	}

	code, out, errs := run("server", "status", "--json", "--socket", fa.sock)
	fa.next(t)
	var back server.Status
	if code != 0 || errs != "" || json.Unmarshal([]byte(out), &back) != nil {
		t.Fatalf("server status --json: exit %d, %s\n%s", code, errs, out)
	}
	if !reflect.DeepEqual(back, gwStatus) {
		t.Errorf("server status --json lost data:\n got %+v\nwant %+v", back, gwStatus)
	}

	for _, tt := range []struct {
		args           []string
		code           int
		stdout, stderr string
		req            adminsock.Request
	}{
		{[]string{"server", "kick", "alice-laptop", "--socket", fa.sock}, 0, "kicked alice-laptop\n", "", adminsock.Request{Cmd: "kick", Device: "alice-laptop"}},
		{[]string{"server", "kick", "--socket", fa.sock, "ghost"}, 1, "", `sallyport: no session for device "ghost"` + "\n", adminsock.Request{Cmd: "kick", Device: "ghost"}},
		{[]string{"server", "reload", "-c", cfg}, 0, "reloaded (see the gateway log for the outcome)\n", "", adminsock.Request{Cmd: "reload"}},
	} {
		code, out, errs := run(tt.args...)
		if code != tt.code || out != tt.stdout || errs != tt.stderr {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d, %q, %q", tt.args, code, out, errs, tt.code, tt.stdout, tt.stderr)
		}
		if r := fa.next(t); r != tt.req {
			t.Errorf("%q sent %+v, want %+v", tt.args, r, tt.req)
		}
	}

	// A config that does not load is named, and nothing is sent.
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[tls]\n"), 0o600)
	if code, _, errs := run("server", "reload", "-c", bad); code != 1 || !strings.Contains(errs, "bad.toml") || !strings.Contains(errs, "is required") {
		t.Errorf("reload with a bad config: exit %d, %s", code, errs)
	}
	if code, _, errs := run("status", "-c", bad); code != 1 || !strings.Contains(errs, "bad.toml") {
		t.Errorf("status with a bad config: exit %d, %s", code, errs)
	}
	select {
	case r := <-fa.reqs:
		t.Errorf("a bad config still reached the socket: %+v", r)
	default:
	}
}

func TestClientStatus(t *testing.T) {
	notAfter := time.Date(2027, 1, 15, 0, 0, 0, 0, time.UTC)
	retry := time.Date(2026, 12, 1, 9, 30, 0, 0, time.Local)
	up := client.Status{
		Connected: true, Server: "vpn.example.com:443", Address: "10.8.0.2", Routes: []string{"192.168.77.0/24", "10.1.0.0/16"},
		DNS: []string{"192.168.77.53"}, Since: started, BytesIn: 5 << 20, BytesOut: 1023, Device: "alice-laptop",
		CertNotAfter: notAfter, CertDaysLeft: 45, KeyKind: "tpm", KeyLocation: "TPM /dev/tpmrm0 (ECDSA P-256, key file /etc/sallyport/devices/alice-laptop.tpmkey)",
		Installed: client.Installed{Table: 51820, Routes: []string{"192.168.77.0/24"}, Rules: []string{"from all lookup 51820"}, KillSwitch: true},
	}
	for _, tt := range []struct {
		name  string
		st    client.Status
		want  []string // lines (fields joined by one space) that must appear
		never []string
	}{
		{"connected", up, []string{
			"state: connected", "device: alice-laptop", "server: vpn.example.com:443", "address: 10.8.0.2",
			"routes: 192.168.77.0/24, 10.1.0.0/16", "table 51820: 192.168.77.0/24", "rules: from all lookup 51820",
			"kill switch: on (traffic outside the tunnel is blocked)", "since: 2026-11-30T08:00:00Z",
			"traffic: 5.0 MiB in, 1023 B out", "certificate: expires 2027-01-15 (45 days left)",
			"device key: in this laptop's TPM (cannot be copied off it): TPM /dev/tpmrm0 (ECDSA P-256, key file /etc/sallyport/devices/alice-laptop.tpmkey)",
		}, []string{"WARNING", "read-back error"}},
		{"key in a file", client.Status{Device: "d", CertDaysLeft: 100, KeyKind: "file", KeyLocation: "file /etc/sallyport/d.key"},
			[]string{"device key: file /etc/sallyport/d.key (a copy of the file is a copy of the key)"}, []string{"TPM"}},
		{"refused, with the sentence for the employee", client.Status{
			Device: "alice-laptop", Message: "Your device certificate was revoked: ask IT.", LastError: "close: revoked",
			RetryAt: retry, CertDaysLeft: 3, CertNotAfter: notAfter, InstallErr: "netlink: permission denied",
		}, []string{
			"state: Your device certificate was revoked: ask IT. (next try 09:30:00)", "server: -", "address: -", "routes: -",
			"kill switch: off", "read-back error: netlink: permission denied", "certificate: expires 2027-01-15 (3 days left) WARNING: renew soon",
		}, []string{"close: revoked", "since:"}},
		{"network trouble", client.Status{Device: "d", LastError: "dial tcp: i/o timeout", CertDaysLeft: 100},
			[]string{"state: reconnecting (dial tcp: i/o timeout)"}, []string{"next try", "WARNING"}},
		// The IPv6 tunnel address of a dual-stack tunnel is shown too.
		{"dual stack", client.Status{Connected: true, Device: "d", Address: "10.8.0.2/24", Address6: "fd00:8::2/64", CertDaysLeft: 100},
			[]string{"address: 10.8.0.2/24, fd00:8::2/64"}, nil},
		// While reconnecting, the gateway it is trying, not "-".
		{"first attempt", client.Status{Device: "d", Trying: "vpn.example.com:443", LastError: "dial tcp: i/o timeout", CertDaysLeft: 100},
			[]string{"server: vpn.example.com:443 (trying)"}, []string{"server: -", "last connected"}},
		{"moved on", client.Status{Device: "d", Server: "a.example:443", Trying: "b.example:443", CertDaysLeft: 100},
			[]string{"server: b.example:443 (trying); last connected to a.example:443"}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fa := newFakeAdmin(t, func(r adminsock.Request) (any, error) { return tt.st, nil })
			code, out, errs := run("status", "--socket", fa.sock)
			if code != 0 || errs != "" {
				t.Fatalf("status: exit %d: %s", code, errs)
			}
			if r := fa.next(t); r.Cmd != "status" {
				t.Errorf("status sent %+v", r)
			}
			var lines []string
			for _, l := range strings.Split(out, "\n") {
				lines = append(lines, strings.Join(strings.Fields(l), " "))
			}
			for _, w := range tt.want {
				if !contains(lines, w) {
					t.Errorf("no line %q in:\n%s", w, out)
				}
			}
			for _, n := range tt.never {
				if strings.Contains(out, n) {
					t.Errorf("%q shown:\n%s", n, out)
				}
			}
			code, out, _ = run("status", "--json", "--socket", fa.sock)
			var back client.Status
			if code != 0 || json.Unmarshal([]byte(out), &back) != nil || !back.CertNotAfter.Equal(tt.st.CertNotAfter) || back.Message != tt.st.Message || back.Installed.Table != tt.st.Installed.Table {
				t.Errorf("status --json: exit %d\n%s", code, out)
			}
		})
	}
}

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if l == s {
			return true
		}
	}
	return false
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 1<<20 - 1: "1024.0 KiB", 1 << 20: "1.0 MiB",
		5 << 30: "5.0 GiB", 1 << 40: "1.0 TiB", 1 << 50: "1.0 PiB", 1<<64 - 1: "16.0 EiB",
	} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
