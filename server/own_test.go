package server

import (
	"crypto/x509"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sallyport/sallyport/server/policy"
)

// TestDeviceCannotReachGateway: a device whose policy covers the gateway's
// addresses (the pool with the gateway's tunnel address, "any") cannot
// send to them, nor to loopback, while the rest of the network stays
// open; a rule naming the tunnel address alone opens it, for its port
// only. A host address added at run time is closed at the next refresh.
func TestDeviceCannotReachGateway(t *testing.T) {
	h := newGatewayHarness(t, []policy.Policy{{Name: "all", Match: policy.Match{OU: []string{"eng"}},
		Allow: []string{"any", "10.8.0.1 udp/53"}}}, netip.Prefix{})
	defer h.close()
	if own := h.s.trustNow().own.Addrs(); !slices.Contains(own, netip.MustParseAddr("10.8.0.1")) {
		t.Fatalf("the tunnel gateway address is not in the own set %v", own)
	}
	d := h.connect(h.ca.leafWithKey(t, "alice", []string{"eng"}, x509.ExtKeyUsageClientAuth))
	defer d.tc.Close()
	me := d.addr
	d.send(t, udp4(me, "10.8.0.1", 5000, 9580))      // the gateway's tunnel address: metrics port
	d.send(t, udp4(me, "127.0.0.1", 5000, 9580))     // loopback
	d.send(t, udp4(me, "192.168.77.10", 5000, 9580)) // the LAN: allowed by "any"
	d.send(t, udp4(me, "10.8.0.1", 5000, 53))        // named for DNS: allowed
	waitFor(t, func() bool { st := h.s.Status(); return len(st.Sessions) == 1 && st.Sessions[0].Dropped.Policy == 2 })
	waitFor(t, func() bool { return len(h.tun.packets()) == 2 })
	for _, p := range h.tun.packets() {
		if dst := netip.AddrFrom4([4]byte(p[16:20])); dst.String() != "192.168.77.10" && !(dst.String() == "10.8.0.1" && p[22] == 0 && p[23] == 53) {
			t.Fatalf("a packet to %s reached the TUN", dst)
		}
	}

	// An address the host gains later is closed once the set is read again.
	own := h.s.trustNow().own
	own.Set(append(own.Addrs(), netip.MustParseAddr("192.168.77.1")))
	d.send(t, udp4(me, "192.168.77.1", 5000, 22))
	waitFor(t, func() bool { return h.s.Status().Sessions[0].Dropped.Policy == 3 })
}

// TestOwnAddrsFromConfig: the set the gateway starts with holds the pools'
// gateway addresses, the listeners' specific addresses and the host's
// interface addresses; refreshOwn keeps the set shared across reloads.
func TestOwnAddrsFromConfig(t *testing.T) {
	cfg := &Config{Listen: "192.0.2.7:443", Tunnel: TunnelConfig{IPv4Pool: "10.8.0.0/24", IPv6Pool: "fd00:8::/64"}, Metrics: MetricsConfig{Listen: "0.0.0.0:9580"}}
	got := configOwnAddrs(cfg)
	for _, want := range []string{"10.8.0.1", "fd00:8::1", "192.0.2.7"} {
		if !slices.Contains(got, netip.MustParseAddr(want)) {
			t.Errorf("config own addresses %v lack %s", got, want)
		}
	}
	if slices.Contains(got, netip.IPv4Unspecified()) {
		t.Errorf("a wildcard listener put 0.0.0.0 in the set: %v", got)
	}
	if host := hostAddrs(); !slices.ContainsFunc(host, netip.Addr.IsLoopback) {
		t.Errorf("host addresses %v lack loopback", host)
	} else if !slices.Contains(host, netip.MustParseAddr("127.255.255.255")) {
		t.Errorf("host addresses %v lack the broadcast address of lo's 127.0.0.1/8", host)
	}
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	before := h.s.trustNow().own
	h.reload(engPolicyTOML)
	if h.s.trustNow().own != before {
		t.Fatal("a reload made a new own set: the refresh would update a set no grant reads")
	}
	before.Set(nil)
	h.s.refreshOwn()
	if !slices.Contains(before.Addrs(), netip.MustParseAddr("10.8.0.1")) {
		t.Fatal("refreshOwn did not read the addresses again")
	}
}

// TestSubnetOwn: with an interface address, its subnet's broadcast and
// network address (IPv4 below /31) or subnet-router anycast address (IPv6
// below /127) reach the host itself.
func TestSubnetOwn(t *testing.T) {
	for in, want := range map[string]string{
		"198.19.77.1/24":  "198.19.77.1 198.19.77.0 198.19.77.255",
		"10.8.0.1/24":     "10.8.0.1 10.8.0.0 10.8.0.255",
		"10.0.0.9/8":      "10.0.0.9 10.0.0.0 10.255.255.255",
		"192.0.2.4/30":    "192.0.2.4 192.0.2.4 192.0.2.7",
		"192.0.2.4/31":    "192.0.2.4",
		"192.0.2.4/32":    "192.0.2.4",
		"fd00:77::1/64":   "fd00:77::1 fd00:77::",
		"fd00:213::1/112": "fd00:213::1 fd00:213::",
		"2001:db8::5/127": "2001:db8::5",
		"2001:db8::5/128": "2001:db8::5",
	} {
		var got []string
		for _, a := range subnetOwn(netip.MustParsePrefix(in)) {
			got = append(got, a.String())
		}
		if strings.Join(got, " ") != want {
			t.Errorf("subnetOwn(%s) = %v, want %s", in, got, want)
		}
	}
	cfg := &Config{Tunnel: TunnelConfig{IPv4Pool: "10.8.0.0/24", IPv6Pool: "fd00:8::/64"}}
	got := configOwnAddrs(cfg)
	for _, want := range []string{"10.8.0.255", "10.8.0.0", "fd00:8::"} {
		if !slices.Contains(got, netip.MustParseAddr(want)) {
			t.Errorf("config own addresses %v lack the pool's %s", got, want)
		}
	}
}

// TestCheckWarnings: server check warns about a wildcard metrics listener
// and a DNS server on a gateway address no allow rule names.
func TestCheckWarnings(t *testing.T) {
	h := newGatewayHarness(t, engPolicy, netip.Prefix{})
	defer h.close()
	path := h.s.config().Path
	writeFile(t, path, harnessTOML("")+"[metrics]\nlisten = \"0.0.0.0:9580\"\n"+
		"[[policy]]\nname = \"dns-on-gw\"\nmatch = { cn = [\"*\"] }\nallow = [\"10.8.0.0/24\"]\ndns = [\"10.8.0.1\"]\n")
	r, err := Check(path)
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(r.Warnings, "\n")
	if !strings.Contains(all, "metrics.listen 0.0.0.0:9580 is a wildcard address") || !strings.Contains(all, `policy "dns-on-gw" pushes the DNS server 10.8.0.1`) {
		t.Fatalf("warnings:\n%s", all)
	}
	writeFile(t, path, harnessTOML("")+"[metrics]\nlisten = \"127.0.0.1:9580\"\n"+engPolicyTOML)
	if r, err = Check(path); err != nil || strings.Contains(strings.Join(r.Warnings, "\n"), "wildcard") {
		t.Fatalf("a loopback listener: %v %q", err, r.Warnings)
	}
}
