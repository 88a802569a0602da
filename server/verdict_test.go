package server

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/server/conntrack"
	"github.com/sallyport/sallyport/server/policy"
	"github.com/sallyport/sallyport/tunnel"
	"github.com/sallyport/sallyport/tunnel/packet"
)

// noOwners: no other device opened anything.
type noOwners struct{}

func (noOwners) openedBy(netip.Addr, conntrack.Flow, time.Time) bool { return false }

// owners are the flows other devices opened, by the address holding them.
type owners map[netip.Addr]*conntrack.Table

func (o owners) openedBy(addr netip.Addr, f conntrack.Flow, now time.Time) bool {
	t := o[addr]
	return t != nil && t.Has(f, now)
}

func parsed(t *testing.T, pkt []byte) *packet.Info {
	t.Helper()
	var info packet.Info
	if err := packet.Parse(pkt, &info); err != nil {
		t.Fatalf("synthetic packet does not parse: %v", err)
	}
	return &info
}

// TestVerdictIn is the device -> network rule as a pure function, on
// synthetic packets, with no session, socket or root: what a device may
// send, and what it records for the way back.
func TestVerdictIn(t *testing.T) {
	const me, other, host, host2 = "10.8.0.2", "10.8.0.3", "192.168.77.10", "192.168.99.10"
	set, err := policy.Compile([]policy.Policy{{Name: "p", Match: policy.Match{CN: []string{"*"}},
		Allow: []string{"192.168.77.0/24 udp/53", "192.168.77.0/24 tcp/443"}}})
	if err != nil {
		t.Fatal(err)
	}
	grant := set.Lookup(pki.Identity{Device: "alice"})
	now := time.Unix(1e9, 0)
	otherFlows := conntrack.New(16)
	// The other device opened udp 6000 -> me:7000 under its own policy.
	otherFlows.Add(conntrack.FlowOf(parsed(t, udp4(other, me, 6000, 7000))), now)
	o := owners{netip.MustParseAddr(other): otherFlows}

	tests := []struct {
		name string
		pkt  []byte
		want tunnel.DropReason
	}{
		{"allowed udp", udp4(me, host, 5000, 53), tunnel.Accept},
		{"allowed tcp", ipv4(packet.ProtoTCP, me, host, l4(packet.ProtoTCP, 40000, 443, 0, 0)), tunnel.Accept},
		{"port outside the grant", udp4(me, host, 5000, 54), tunnel.DropPolicy},
		{"host outside the grant", udp4(me, host2, 5000, 53), tunnel.DropPolicy},
		{"spoofed source, allowed destination", udp4(other, host, 5000, 53), tunnel.DropSpoofed},
		{"the gateway's address as source", udp4("10.8.0.1", host, 5000, 53), tunnel.DropSpoofed},
		{"reply to the flow the other device opened", udp4(me, other, 7000, 6000), tunnel.Accept},
		{"same ports, wrong direction of that flow", udp4(me, other, 6000, 7000), tunnel.DropPolicy},
		{"to the other device, no flow", udp4(me, other, 7001, 6000), tunnel.DropPolicy},
		{"kernel router solicitation", icmp6(icmpv6RouterSolicit, "fe80::1", "ff02::2"), tunnel.DropQuiet},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rules{addr: netip.MustParseAddr(me), grant: grant, flows: conntrack.New(16), others: o}
			if got := verdictIn(parsed(t, tt.pkt), &r, now); got != tt.want {
				t.Fatalf("verdictIn = %s, want %s", got, tt.want)
			}
			if want := map[bool]int{true: 1, false: 0}[tt.want == tunnel.Accept && tt.name[:5] == "allow"]; r.flows.Len() != want {
				t.Fatalf("%d flows recorded, want %d", r.flows.Len(), want)
			}
		})
	}
}

// TestVerdictInRecordsFlow: an allowed packet opens its flow, so the reply
// passes verdictOut and nothing else does; a full flow table refuses a new
// flow (policy) but still passes a known one.
func TestVerdictInRecordsFlow(t *testing.T) {
	const me, host = "10.8.0.2", "192.168.77.10"
	set, err := policy.Compile([]policy.Policy{{Name: "p", Match: policy.Match{CN: []string{"*"}}, Allow: []string{"192.168.77.0/24 udp"}}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1e9, 0)
	r := rules{addr: netip.MustParseAddr(me), grant: set.Lookup(pki.Identity{Device: "alice"}), flows: conntrack.New(1), others: noOwners{}}
	reply := udp4(host, me, 53, 5000)
	if got := verdictOut(reply, parsed(t, reply), &r, now); got != tunnel.DropNoFlow {
		t.Fatalf("reply before the request: %s, want no_flow", got)
	}
	if got := verdictIn(parsed(t, udp4(me, host, 5000, 53)), &r, now); got != tunnel.Accept {
		t.Fatalf("request: %s", got)
	}
	if got := verdictOut(reply, parsed(t, reply), &r, now.Add(time.Second)); got != tunnel.Accept {
		t.Fatalf("reply after the request: %s, want accept", got)
	}
	if got := verdictIn(parsed(t, udp4(me, host, 5001, 53)), &r, now); got != tunnel.DropPolicy {
		t.Fatalf("a second flow in a table of one: %s, want policy", got)
	}
	if got := verdictIn(parsed(t, udp4(me, host, 5000, 53)), &r, now.Add(2*time.Second)); got != tunnel.Accept {
		t.Fatalf("the known flow with the table full: %s, want accept", got)
	}
	other := udp4(host, me, 53, 5001)
	if got := verdictOut(other, parsed(t, other), &r, now); got != tunnel.DropNoFlow {
		t.Fatalf("reply to the refused flow: %s, want no_flow", got)
	}
}

// TestVerdictOutOpenedByOther: a packet from another device to this one
// passes only as part of a flow the sender opened under its own policy.
func TestVerdictOutOpenedByOther(t *testing.T) {
	const me, other = "10.8.0.2", "10.8.0.3"
	now := time.Unix(1e9, 0)
	otherFlows := conntrack.New(4)
	opened := udp4(other, me, 6000, 7000)
	otherFlows.Add(conntrack.FlowOf(parsed(t, opened)), now)
	r := rules{addr: netip.MustParseAddr(me), flows: conntrack.New(4), others: owners{netip.MustParseAddr(other): otherFlows}}
	if got := verdictOut(opened, parsed(t, opened), &r, now); got != tunnel.Accept {
		t.Fatalf("flow the other device opened: %s", got)
	}
	notOpened := udp4(other, me, 6001, 7000)
	if got := verdictOut(notOpened, parsed(t, notOpened), &r, now); got != tunnel.DropNoFlow {
		t.Fatalf("flow nobody opened: %s", got)
	}
}

// TestSessionVerdicts: the session's wrappers parse, count and decide with
// the grant in force now.
func TestSessionVerdicts(t *testing.T) {
	const me, host = "10.8.0.2", "192.168.77.10"
	set, err := policy.Compile([]policy.Policy{{Name: "p", Match: policy.Match{CN: []string{"*"}}, Allow: []string{"192.168.77.0/24 udp/53"}}})
	if err != nil {
		t.Fatal(err)
	}
	ss := &session{srv: &Server{}, addr: netip.MustParseAddr(me), flows: conntrack.New(8)}
	ss.grant.Store(set.Lookup(pki.Identity{Device: "alice"}))
	now := time.Now()
	if got := ss.fromDevice([]byte{0x45, 0, 0}, now); got != tunnel.DropMalformed {
		t.Fatalf("truncated packet: %s", got)
	}
	if got := ss.fromDevice(udp4(me, host, 5000, 53), now); got != tunnel.Accept {
		t.Fatalf("allowed: %s", got)
	}
	ss.grant.Store(&policy.Grant{}) // a reload took the policy away
	if got := ss.fromDevice(udp4(me, host, 5001, 53), now); got != tunnel.DropPolicy {
		t.Fatalf("after the policy was cut: %s", got)
	}
	var info packet.Info
	if ss.admit([]byte{0x60}, &info, now) || ss.drops.Load(tunnel.DropMalformed) != 1 {
		t.Fatalf("admit of a truncated packet: malformed=%d", ss.drops.Load(tunnel.DropMalformed))
	}
	if !ss.admit(udp4(host, me, 53, 5000), &info, now) {
		t.Fatal("reply to the allowed flow refused")
	}
	if ss.admit(udp4(host, me, 53, 5009), &info, now) || ss.drops.Load(tunnel.DropNoFlow) != 1 {
		t.Fatal("packet without a flow admitted or not counted")
	}
}

// discardTUN is a TUN that drops what is written to it.
type discardTUN struct{ tunnel.Device }

func (discardTUN) Write(bufs [][]byte, _ int) (int, error) { return len(bufs), nil }

// TestDeviceToLANNoAllocs: the gateway's receive half (tunnel.Inbound with
// the session's verdict) allocates nothing per batch or per packet.
func TestDeviceToLANNoAllocs(t *testing.T) {
	const me, host = "10.8.0.2", "192.168.77.10"
	set, err := policy.Compile([]policy.Policy{{Name: "p", Match: policy.Match{CN: []string{"*"}}, Allow: []string{"192.168.77.0/24 udp"}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &Server{}
	ss := &session{srv: srv, addr: netip.MustParseAddr(me), flows: conntrack.New(64)}
	ss.grant.Store(set.Lookup(pki.Identity{Device: "alice"}))
	in := tunnel.Inbound{Dev: discardTUN{}, MTU: 1500, Verdict: ss.fromDevice, Drops: &ss.drops}
	pkts := [][]byte{udp4(me, host, 5000, 53), udp4("10.8.0.9", host, 5000, 53), udp4(me, host, 5001, 53), udp4(me, "192.168.1.1", 5000, 53)}
	b := tunnel.NewBatch(len(pkts), tunnel.Headroom+2048)
	fill := func() {
		for i, p := range pkts {
			b.Sizes[i] = copy(b.Bufs[i][tunnel.Headroom:], p)
		}
	}
	now := time.Now()
	fill()
	in.Deliver(b, len(pkts), now, 0) // flows recorded once
	if n := testing.AllocsPerRun(100, func() { fill(); in.Deliver(b, len(pkts), now, 0) }); n != 0 {
		t.Fatalf("%.1f allocations per batch", n)
	}
	if ss.drops.Load(tunnel.DropSpoofed) != 102 || ss.drops.Load(tunnel.DropPolicy) != 102 { // 1 + AllocsPerRun's warm-up + 100
		t.Fatalf("spoofed %d policy %d", ss.drops.Load(tunnel.DropSpoofed), ss.drops.Load(tunnel.DropPolicy))
	}
}

// FuzzVerdicts: arbitrary bytes as a device's packet (fromDevice) and as a
// packet from the network for it (admit) never panic, and nothing passes
// that does not parse: from the device only from one of its addresses,
// to a destination its grant allows; for the device only to it.
func FuzzVerdicts(f *testing.F) {
	const me, me6, host = "10.8.0.2", "fd00:8::2", "192.168.77.10"
	f.Add(udp4(me, host, 5000, 53))
	f.Add(udp4(host, me, 53, 5000))
	f.Add(udp4("10.8.0.9", host, 5000, 53)) // spoofed
	f.Add(ipv4(packet.ProtoTCP, me, host, l4(packet.ProtoTCP, 40000, 443, 0, 0)))
	f.Add(udp6(me6, "fd00:77::10", 5000, 53))
	f.Add(icmp6(icmpv6RouterSolicit, "fe80::1", "ff02::2"))
	f.Add(icmpErr(false, 3, host, me, udp4(me, host, 5000, 53)[:28], 0))
	f.Add([]byte{0x45})
	set, err := policy.Compile([]policy.Policy{{Name: "p", Match: policy.Match{CN: []string{"*"}},
		Allow: []string{"192.168.77.0/24 udp/53", "192.168.77.0/24 tcp/443", "fd00:77::/64"}}})
	if err != nil {
		f.Fatal(err)
	}
	grant := set.Lookup(pki.Identity{Device: "alice"})
	addr, addr6 := netip.MustParseAddr(me), netip.MustParseAddr(me6)
	ss := &session{srv: &Server{}, addr: addr, addr6: addr6, flows: conntrack.New(64)}
	ss.grant.Store(grant)
	now := time.Unix(1e9, 0)
	ss.fromDevice(udp4(me, host, 5000, 53), now) // a flow for admit's replies
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var info packet.Info
		parses := packet.Parse(pkt, &info) == nil
		if ss.fromDevice(pkt, now) == tunnel.Accept {
			if !parses || info.Src != addr && info.Src != addr6 || !grant.Allows(&info) {
				t.Fatalf("from the device, passed: %+v (parses %v)", info, parses)
			}
		}
		var scratch packet.Info
		if ss.admit(pkt, &scratch, now) && (!parses || info.Dst != addr && info.Dst != addr6) {
			t.Fatalf("for the device, passed: %+v (parses %v)", info, parses)
		}
	})
}

// TestThiefBatch: one batch of what a device with a stolen certificate
// sends, through the gateway's receive half (tunnel.Inbound with the
// session's verdict), honest packets between. Each lie gets its reason and
// is counted (neighbour discovery dropped uncounted), and the honest ones
// and the packets that are allowed reach the TUN in the order they came.
func TestThiefBatch(t *testing.T) {
	const me, me6, host, host6 = "10.8.0.2", "fd00:8::2", "192.168.77.10", "fd00:77::10"
	set, err := policy.Compile([]policy.Policy{{Name: "p", Match: policy.Match{CN: []string{"*"}},
		Allow: []string{"192.168.77.0/24 udp/53", "192.168.77.0/24 tcp/443", "fd00:77::/64 udp/53"}}})
	if err != nil {
		t.Fatal(err)
	}
	ss := &session{srv: &Server{}, addr: netip.MustParseAddr(me), addr6: netip.MustParseAddr(me6), flows: conntrack.New(64)}
	ss.grant.Store(set.Lookup(pki.Identity{Device: "alice"}))

	frag4 := func(p []byte, word uint16) []byte { binary.BigEndian.PutUint16(p[6:], word); return p }
	// IPv6 extension headers: hop-by-hop then destination options (8
	// bytes each), then UDP; nine destination options are one too many.
	chain := func(n int, last []byte) []byte {
		var b []byte
		for i := range n {
			next := byte(60) // destination options
			if i == n-1 {
				next = packet.ProtoUDP
			}
			b = append(b, next, 0, 0, 0, 0, 0, 0, 0)
		}
		return append(b, last...)
	}
	fragHdr6 := func(next byte, off uint16) []byte {
		h := []byte{next, 0, 0, 0, 0, 0, 0, 1}
		binary.BigEndian.PutUint16(h[2:], off)
		return h
	}
	udp := l4(packet.ProtoUDP, 5000, 53, 0, 0)
	tcp443 := l4(packet.ProtoTCP, 40000, 443, 0, 0)
	trailing := append(udp4(me, host, 5001, 53), 0xde, 0xad) // total length shorter than the frame
	super := ipv4(packet.ProtoTCP, me, host, append(l4(packet.ProtoTCP, 40001, 443, 0, 0)[:20], make([]byte, 3000)...))
	lying := [tunnel.VnetHdrLen]byte{tunnel.VnetFlagNeedsCsum, tunnel.VnetGSOTCPv4, 40, 0, 0, 0, 20, 0, 16, 0} // segment size 0

	type pkt struct {
		name string
		b    []byte
		gso  bool
		why  tunnel.DropReason
	}
	lies := []pkt{
		{"spoofed source", udp4("10.8.0.9", host, 5000, 53), false, tunnel.DropSpoofed},
		{"the gateway's address as source", udp4("10.8.0.1", host, 5000, 53), false, tunnel.DropSpoofed},
		{"port outside the grant", udp4(me, host, 5000, 54), false, tunnel.DropPolicy},
		{"ipv4 total length beyond the frame", udp4(me, host, 5000, 53)[:27], false, tunnel.DropMalformed},
		{"ipv4 total length shorter than the frame (the kernel trims)", trailing, false, tunnel.Accept},
		{"ipv6 extension chain to an allowed port", ipv6(0, me6, host6, chain(2, udp)), false, tunnel.Accept},
		{"ipv6 nine extension headers", ipv6(60, me6, host6, chain(9, udp)), false, tunnel.DropMalformed},
		{"tiny first fragment", frag4(ipv4(packet.ProtoTCP, me, host, tcp443[:8]), 0x2000), false, tunnel.DropMalformed},
		{"first fragment to an allowed port", frag4(ipv4(packet.ProtoTCP, me, host, tcp443), 0x2000), false, tunnel.Accept},
		{"non-first ipv4 fragment under a port rule", frag4(ipv4(packet.ProtoTCP, me, host, tcp443), 185), false, tunnel.DropPolicy},
		{"non-first ipv6 fragment dressed as a first one", ipv6(44, me6, host6, append(fragHdr6(44, 8), append(fragHdr6(packet.ProtoUDP, 0), udp...)...)), false, tunnel.DropPolicy},
		{"router solicitation", icmp6(icmpv6RouterSolicit, "fe80::1", "ff02::2"), false, tunnel.DropQuiet},
		{"not ip", []byte{0x00, 1, 2, 3}, false, tunnel.DropMalformed},
		{"ipv4 header only", udp4(me, host, 5000, 53)[:20], false, tunnel.DropMalformed},
		{"super-packet with segment size 0", super, true, tunnel.DropMalformed},
	}
	var in []pkt
	for i, l := range lies {
		in = append(in, pkt{"honest", udp4(me, host, 6000+uint16(i), 53), false, tunnel.Accept}, l)
	}
	b := tunnel.NewBatch(len(in), tunnel.Headroom+tunnel.MaxPayload)
	var want [][]byte
	counts := map[tunnel.DropReason]uint64{}
	for i, p := range in {
		b.Sizes[i] = copy(b.Bufs[i][tunnel.Headroom:], p.b)
		if p.gso {
			copy(b.Bufs[i][tunnel.Headroom-tunnel.VnetHdrLen:], lying[:])
			b.GSO[i] = true
		}
		if p.why == tunnel.Accept {
			want = append(want, p.b)
		}
		counts[p.why]++
	}
	tun := newFakeTUN()
	inb := tunnel.Inbound{Dev: tun, MTU: 1500, Verdict: ss.fromDevice, Drops: &ss.drops}
	res := inb.Deliver(b, len(in), time.Now(), 0)
	got := tun.packets()
	if len(got) != len(want) || res.Written != len(want) {
		t.Fatalf("TUN got %d packets (result %+v), want %d", len(got), res, len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("TUN packet %d differs (order kept?)", i)
		}
	}
	for _, r := range tunnel.GatewayDrops {
		if ss.drops.Load(r) != counts[r] {
			t.Errorf("dropped %s: %d, want %d", r, ss.drops.Load(r), counts[r])
		}
	}
}
