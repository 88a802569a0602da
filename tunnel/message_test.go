package tunnel

import (
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func goodConfig() Config {
	return Config{
		Version:       1,
		Caps:          []string{"gso"},
		Address:       netip.MustParsePrefix("10.8.0.2/24"),
		Gateway:       netip.MustParseAddr("10.8.0.1"),
		Routes:        []netip.Prefix{netip.MustParsePrefix("192.168.77.0/24"), netip.MustParsePrefix("fd00::/64")},
		DNS:           []netip.Addr{netip.MustParseAddr("192.168.77.53")},
		SearchDomains: []string{"corp.example.com"},
		MTU:           1400,
		Keepalive:     25 * time.Second,
		Timeout:       90 * time.Second,
	}
}

func TestConfigRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		cfg  func(*Config)
	}{
		{"full", func(*Config) {}},
		{"minimal", func(c *Config) {
			*c = Config{Version: 1, Address: netip.MustParsePrefix("10.0.0.5/32"), MTU: 576}
		}},
		{"ipv6", func(c *Config) {
			c.Address = netip.MustParsePrefix("fd00:8::2/64")
			c.Gateway = netip.MustParseAddr("fd00:8::1")
			c.MTU = 1280
		}},
		{"dual stack", func(c *Config) {
			c.Address6 = netip.MustParsePrefix("fd00:8::2/112")
			c.Gateway6 = netip.MustParseAddr("fd00:8::1")
		}},
		{"dual stack without gateway6", func(c *Config) { c.Address6 = netip.MustParsePrefix("fd00:8::2/64") }},
		{"subsecond durations", func(c *Config) { c.Keepalive = 1500 * time.Millisecond; c.Timeout = 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := goodConfig()
			tt.cfg(&c)
			b, err := EncodeConfig(c)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeConfig(b)
			if err != nil {
				t.Fatalf("decode %s: %v", b, err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("round trip:\n got %+v\nwant %+v\njson %s", got, c, b)
			}
		})
	}
}

func TestConfigJSONShape(t *testing.T) {
	b, err := EncodeConfig(goodConfig())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"version", "caps", "address", "gateway", "routes", "dns", "search_domains", "mtu", "keepalive", "timeout"} {
		if _, ok := m[k]; !ok {
			t.Errorf("key %q missing from %s", k, b)
		}
	}
	if m["keepalive"] != "25s" || m["address"] != "10.8.0.2/24" {
		t.Errorf("unexpected encoding %s", b)
	}
	// A v4-only config carries no IPv6 keys, so old peers see the same bytes.
	for _, k := range []string{"address6", "gateway6"} {
		if _, ok := m[k]; ok {
			t.Errorf("key %q present in a v4-only config: %s", k, b)
		}
	}
	c := goodConfig()
	c.Address6, c.Gateway6 = netip.MustParsePrefix("fd00:8::2/112"), netip.MustParseAddr("fd00:8::1")
	b, _ = EncodeConfig(c)
	m = nil
	_ = json.Unmarshal(b, &m)
	if m["address6"] != "fd00:8::2/112" || m["gateway6"] != "fd00:8::1" {
		t.Errorf("dual-stack encoding %s", b)
	}
}

func TestDecodeConfig(t *testing.T) {
	tests := []struct {
		name string
		json string
		want string // error substring; "" = ok
	}{
		{"ok", `{"version":1,"address":"10.8.0.2/24","gateway":"10.8.0.1","mtu":1400,"keepalive":"25s","timeout":"1m30s"}`, ""},
		{"seconds as numbers", `{"version":1,"address":"10.8.0.2/24","mtu":1400,"keepalive":25,"timeout":90.5}`, ""},
		{"unknown field ignored", `{"version":1,"address":"10.8.0.2/24","mtu":1400,"future":{"x":[1,2]}}`, ""},
		{"non-canonical route normalized", `{"version":1,"address":"10.8.0.2/24","mtu":1400,"routes":["192.168.1.7/24"]}`, ""},
		{"not json", `hello`, "decode config"},
		{"trailing garbage", `{"version":1,"address":"10.8.0.2/24","mtu":1400} x`, "decode config"},
		{"version 0", `{"address":"10.8.0.2/24","mtu":1400}`, "version 0"},
		{"no address", `{"version":1,"mtu":1400}`, "address"},
		{"bad address", `{"version":1,"address":"10.8.0.300/24","mtu":1400}`, "decode config"},
		{"loopback address", `{"version":1,"address":"127.0.0.1/8","mtu":1400}`, "not a unicast"},
		{"multicast address", `{"version":1,"address":"224.0.0.1/24","mtu":1400}`, "not a unicast"},
		{"unspecified address", `{"version":1,"address":"0.0.0.0/8","mtu":1400}`, "not a unicast"},
		{"zero-length prefix", `{"version":1,"address":"10.0.0.2/0","mtu":1400}`, "invalid"},
		{"gateway family", `{"version":1,"address":"10.8.0.2/24","gateway":"fd00::1","mtu":1400}`, "family"},
		{"gateway equals address", `{"version":1,"address":"10.8.0.2/24","gateway":"10.8.0.2","mtu":1400}`, "equals"},
		{"mtu low", `{"version":1,"address":"10.8.0.2/24","mtu":575}`, "MTU 575"},
		{"mtu high", `{"version":1,"address":"10.8.0.2/24","mtu":65536}`, "MTU 65536"},
		{"mtu v6 low", `{"version":1,"address":"fd00::2/64","mtu":1000}`, "MTU 1000"},
		{"bad route", `{"version":1,"address":"10.8.0.2/24","mtu":1400,"routes":["nope"]}`, "decode config"},
		{"bad dns", `{"version":1,"address":"10.8.0.2/24","mtu":1400,"dns":["0.0.0.0"]}`, "DNS server"},
		{"bad search domain", `{"version":1,"address":"10.8.0.2/24","mtu":1400,"search_domains":["a b"]}`, "search domain"},
		{"empty label", `{"version":1,"address":"10.8.0.2/24","mtu":1400,"search_domains":["a..b"]}`, "search domain"},
		{"negative keepalive", `{"version":1,"address":"10.8.0.2/24","mtu":1400,"keepalive":"-1s"}`, "keepalive"},
		{"huge timeout", `{"version":1,"address":"10.8.0.2/24","mtu":1400,"timeout":"48h"}`, "timeout"},
		{"timeout under keepalive", `{"version":1,"address":"10.8.0.2/24","mtu":1400,"keepalive":"30s","timeout":"10s"}`, "must exceed"},
		{"bad duration", `{"version":1,"address":"10.8.0.2/24","mtu":1400,"keepalive":"soon"}`, "keepalive"},
		{"bad duration type", `{"version":1,"address":"10.8.0.2/24","mtu":1400,"keepalive":true}`, "keepalive"},
		{"bad cap", `{"version":1,"address":"10.8.0.2/24","mtu":1400,"caps":[""]}`, "capability"},
		{"dual stack", `{"version":1,"address":"10.8.0.2/24","address6":"fd00:8::2/112","gateway6":"fd00:8::1","mtu":1400}`, ""},
		{"empty address6 is absent", `{"version":1,"address":"10.8.0.2/24","address6":"","mtu":1400}`, ""},
		{"address6 is v4", `{"version":1,"address":"10.8.0.2/24","address6":"10.9.0.2/24","mtu":1400}`, "address6"},
		{"address6 is v4-mapped", `{"version":1,"address":"10.8.0.2/24","address6":"::ffff:10.9.0.2/120","mtu":1400}`, "address6"},
		{"address6 beside v6 address", `{"version":1,"address":"fd00::2/64","address6":"fd01::2/64","mtu":1400}`, "non-IPv4"},
		{"address6 link-local", `{"version":1,"address":"10.8.0.2/24","address6":"fe80::2/64","mtu":1400}`, "not a unicast"},
		{"address6 /0", `{"version":1,"address":"10.8.0.2/24","address6":"fd00::2/0","mtu":1400}`, "address6"},
		{"gateway6 without address6", `{"version":1,"address":"10.8.0.2/24","gateway6":"fd00::1","mtu":1400}`, "address6"},
		{"gateway6 is v4", `{"version":1,"address":"10.8.0.2/24","address6":"fd00::2/64","gateway6":"10.8.0.1","mtu":1400}`, "gateway6"},
		{"gateway6 equals address6", `{"version":1,"address":"10.8.0.2/24","address6":"fd00::2/64","gateway6":"fd00::2","mtu":1400}`, "equals"},
		{"dual stack mtu low", `{"version":1,"address":"10.8.0.2/24","address6":"fd00::2/64","mtu":1000}`, "MTU 1000"},
		{"wrong type", `{"version":"1","address":"10.8.0.2/24","mtu":1400}`, "decode config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := DecodeConfig([]byte(tt.json))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want containing %q (got %+v)", err, tt.want, c)
			}
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("err %v does not wrap ErrProtocol", err)
			}
		})
	}
	c, err := DecodeConfig([]byte(`{"version":1,"address":"10.8.0.2/24","mtu":1400,"routes":["192.168.1.7/24"],"keepalive":25}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Routes[0] != netip.MustParsePrefix("192.168.1.0/24") || c.Keepalive != 25*time.Second {
		t.Fatalf("got %+v", c)
	}
}

func TestConfigLimits(t *testing.T) {
	c := goodConfig()
	c.Routes = make([]netip.Prefix, MaxRoutes+1)
	for i := range c.Routes {
		c.Routes[i] = netip.MustParsePrefix("10.0.0.0/8")
	}
	if _, err := EncodeConfig(c); err == nil || !strings.Contains(err.Error(), "routes exceed") {
		t.Fatalf("err = %v", err)
	}
	c = goodConfig()
	c.DNS = make([]netip.Addr, MaxDNS+1)
	if _, err := EncodeConfig(c); err == nil {
		t.Fatal("too many DNS servers accepted")
	}
	if _, err := DecodeConfig(make([]byte, MaxPayload+1)); err == nil || !strings.Contains(err.Error(), "exceeds") {
		t.Fatalf("oversize: %v", err)
	}
}

func TestHello(t *testing.T) {
	tests := []struct {
		name string
		json string
		want string
	}{
		{"ok", `{"version":1,"caps":["gso"],"software":"sallyport 0.1"}`, ""},
		{"future version and fields", `{"version":7,"new":true}`, ""},
		{"version 0", `{}`, "version 0"},
		{"negative", `{"version":-1}`, "version -1"},
		{"too many caps", `{"version":1,"caps":[` + strings.Repeat(`"x",`, MaxCaps) + `"x"]}`, "capabilities exceed"},
		{"long cap", `{"version":1,"caps":["` + strings.Repeat("x", MaxCapLen+1) + `"]}`, "capability"},
		{"control char", `{"version":1,"software":"a\u0001"}`, "software"},
		{"long software", `{"version":1,"software":"` + strings.Repeat("s", MaxSoftwareLen+1) + `"}`, "software"},
		{"not json", `[1]`, "decode hello"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := DecodeHello([]byte(tt.json))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				b, err := EncodeHello(h)
				if err != nil {
					t.Fatal(err)
				}
				h2, err := DecodeHello(b)
				if err != nil || !reflect.DeepEqual(h, h2) {
					t.Fatalf("round trip: %+v %v", h2, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrProtocol) {
				t.Fatalf("err = %v, want ErrProtocol containing %q", err, tt.want)
			}
		})
	}
}

func TestClose(t *testing.T) {
	for _, reason := range []string{"", "kicked", strings.Repeat("r", MaxReasonLen+10)} {
		b, err := EncodeClose(CloseMsg{Reason: reason})
		if err != nil {
			t.Fatal(err)
		}
		m, err := DecodeClose(b)
		if err != nil {
			t.Fatal(err)
		}
		if want := reason[:min(len(reason), MaxReasonLen)]; m.Reason != want {
			t.Fatalf("reason %q, want %q", m.Reason, want)
		}
	}
	if m, err := DecodeClose(nil); err != nil || m.Reason != "" {
		t.Fatalf("empty close: %+v %v", m, err)
	}
	if _, err := DecodeClose([]byte(`{"reason":"` + strings.Repeat("r", MaxReasonLen+1) + `"}`)); err == nil {
		t.Fatal("oversize reason accepted")
	}
	if _, err := DecodeClose([]byte(`{`)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("bad json: %v", err)
	}
}

func TestHasCap(t *testing.T) {
	if !HasCap([]string{"a", "gso"}, "gso") || HasCap(nil, "gso") {
		t.Fatal("HasCap wrong")
	}
}

func FuzzDecodeConfig(f *testing.F) {
	b, _ := EncodeConfig(goodConfig())
	f.Add(b)
	f.Add([]byte(`{"version":1,"address":"10.8.0.2/24","mtu":1400,"keepalive":25}`))
	f.Add([]byte(`{"version":1,"address":"fd00::2/64","mtu":1280,"routes":["::/0"]}`))
	f.Add([]byte(`{"version":1,"address":"10.8.0.2/24","address6":"fd00:8::2/112","gateway6":"fd00:8::1","mtu":1400,"routes":["0.0.0.0/0","::/0"]}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"keepalive":1e308}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := DecodeConfig(in)
		if err != nil {
			return
		}
		// Whatever decodes must validate, re-encode and decode identically.
		if err := c.Validate(); err != nil {
			t.Fatalf("decoded config invalid: %v", err)
		}
		b, err := EncodeConfig(c)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		c2, err := DecodeConfig(b)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip mismatch: %v\n%+v\n%+v", err, c, c2)
		}
	})
}

func FuzzDecodeHello(f *testing.F) {
	f.Add([]byte(`{"version":1,"caps":["gso"],"software":"sallyport"}`))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1e9}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, in []byte) {
		h, err := DecodeHello(in)
		if err != nil {
			return
		}
		b, err := EncodeHello(h)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		h2, err := DecodeHello(b)
		if err != nil || !reflect.DeepEqual(h, h2) {
			t.Fatalf("round trip mismatch: %v", err)
		}
	})
}

func TestConfigAddresses(t *testing.T) {
	c := goodConfig()
	if got := c.Addresses(); len(got) != 1 || got[0] != c.Address {
		t.Fatalf("v4 only: %v", got)
	}
	c.Address6 = netip.MustParsePrefix("fd00:8::2/112")
	if got := c.Addresses(); len(got) != 2 || got[1] != c.Address6 {
		t.Fatalf("dual stack: %v", got)
	}
}

func TestRenewMessages(t *testing.T) {
	req := RenewRequest{CSR: []byte{0x30, 0x82, 1, 2, 3}}
	b, err := EncodeRenewRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeRenewRequest(b); err != nil || !reflect.DeepEqual(got, req) {
		t.Fatalf("request round trip: %+v %v", got, err)
	}
	ok := RenewReply{Certs: [][]byte{{1, 2}, {3}}, CAs: [][]byte{{4}}}
	refused := RenewReply{Reason: "crl-stale", RetryAfter: 600}
	for _, r := range []RenewReply{ok, refused} {
		b, err := EncodeRenewReply(r)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := DecodeRenewReply(b); err != nil || !reflect.DeepEqual(got, r) {
			t.Fatalf("reply round trip: %+v %v", got, err)
		}
	}
	many := func(n, size int) [][]byte {
		out := make([][]byte, n)
		for i := range out {
			out[i] = make([]byte, size)
		}
		return out
	}
	badReplies := []struct {
		name string
		r    RenewReply
	}{
		{"empty", RenewReply{}},
		{"both", RenewReply{Certs: [][]byte{{1}}, Reason: "revoked"}},
		{"bundle alone", RenewReply{CAs: [][]byte{{1}}, Reason: "revoked"}},
		{"too many certs", RenewReply{Certs: many(MaxRenewCerts+1, 1)}},
		{"too many CAs", RenewReply{Certs: [][]byte{{1}}, CAs: many(MaxRenewCAs+1, 1)}},
		{"empty cert", RenewReply{Certs: [][]byte{{}}}},
		{"huge cert", RenewReply{Certs: many(1, MaxRenewCertLen+1)}},
		{"reason not printable", RenewReply{Reason: "re\x00voked"}},
		{"negative retry", RenewReply{Reason: "x", RetryAfter: -1}},
		{"retry without reason", RenewReply{Certs: [][]byte{{1}}, RetryAfter: 5}},
		{"retry too long", RenewReply{Reason: "x", RetryAfter: 86401}},
	}
	for _, tc := range badReplies {
		if _, err := EncodeRenewReply(tc.r); err == nil {
			t.Errorf("%s: encoded", tc.name)
		}
		raw, _ := json.Marshal(tc.r)
		if _, err := DecodeRenewReply(raw); !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: decode %v, want a protocol error", tc.name, err)
		}
	}
	withAtt := RenewRequest{CSR: []byte{1}, Attestation: []byte{2, 3}}
	b, _ = EncodeRenewRequest(withAtt)
	if got, err := DecodeRenewRequest(b); err != nil || !reflect.DeepEqual(got, withAtt) {
		t.Fatalf("request with attestation: %+v %v", got, err)
	}
	for _, r := range []RenewRequest{{}, {CSR: make([]byte, MaxRenewCSR+1)}, {CSR: []byte{1}, Attestation: make([]byte, MaxAttestation+1)}} {
		raw, _ := json.Marshal(r)
		if _, err := DecodeRenewRequest(raw); !errors.Is(err, ErrProtocol) {
			t.Errorf("request of %d bytes: %v, want a protocol error", len(r.CSR), err)
		}
	}
	if _, err := DecodeRenewRequest([]byte(`{"csr":"not base64!"}`)); !errors.Is(err, ErrProtocol) {
		t.Errorf("bad base64: %v", err)
	}
	for _, typ := range []byte{FrameRenew, FrameRenewed} {
		if err := checkFrame(typ, 0); !errors.Is(err, ErrProtocol) {
			t.Errorf("empty %s frame: %v", FrameName(typ), err)
		}
		if err := checkFrame(typ, 100); err != nil {
			t.Errorf("%s frame: %v", FrameName(typ), err)
		}
	}
}

func TestConfigRenewAt(t *testing.T) {
	for _, v := range []float64{0, MinRenewAt, 2.0 / 3, MaxRenewAt} {
		c := goodConfig()
		c.RenewAt = v
		b, err := EncodeConfig(c)
		if err != nil {
			t.Fatalf("renew_at %v: %v", v, err)
		}
		if got, err := DecodeConfig(b); err != nil || got.RenewAt != v {
			t.Fatalf("renew_at %v round trip: %v %v", v, got.RenewAt, err)
		}
	}
	for _, v := range []float64{-1, 0.05, 0.96, 2} {
		c := goodConfig()
		c.RenewAt = v
		if _, err := EncodeConfig(c); err == nil || !strings.Contains(err.Error(), "renew_at") {
			t.Errorf("renew_at %v: %v", v, err)
		}
	}
}

// FuzzDecodeRenewRequest: any bytes as a renew payload never panic; what
// decodes is within the limits and round-trips.
func FuzzDecodeRenewRequest(f *testing.F) {
	b, _ := EncodeRenewRequest(RenewRequest{CSR: []byte("csr")})
	f.Add(b)
	f.Add([]byte(`{"csr":null}`))
	f.Add([]byte(`{"csr":""}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := DecodeRenewRequest(in)
		if err != nil {
			return
		}
		if len(r.CSR) == 0 || len(r.CSR) > MaxRenewCSR {
			t.Fatalf("accepted a request of %d bytes", len(r.CSR))
		}
		b, err := EncodeRenewRequest(r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if r2, err := DecodeRenewRequest(b); err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzDecodeRenewReply: any bytes as a renewed payload never panic; what
// decodes validates and round-trips.
func FuzzDecodeRenewReply(f *testing.F) {
	b, _ := EncodeRenewReply(RenewReply{Certs: [][]byte{{1}, {2}}, CAs: [][]byte{{3}}})
	f.Add(b)
	b, _ = EncodeRenewReply(RenewReply{Reason: "revoked", RetryAfter: 3})
	f.Add(b)
	f.Add([]byte(`{"certs":[],"cas":[""]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := DecodeRenewReply(in)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("decoded reply invalid: %v", err)
		}
		b, err := EncodeRenewReply(r)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if r2, err := DecodeRenewReply(b); err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, r, r2)
		}
	})
}
