package conntrack

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sallyport/sallyport/tunnel/packet"
)

var (
	dev  = netip.MustParseAddr("10.8.0.2")
	host = netip.MustParseAddr("192.168.77.10")
	dev6 = netip.MustParseAddr("fd00::2")
	t0   = time.Unix(1_700_000_000, 0)
)

func TestFlowOfReverse(t *testing.T) {
	tests := []struct {
		name     string
		out, in  packet.Info // device -> host, host -> device reply
		wantSame bool        // reply reverse-matches request
	}{
		{"tcp",
			packet.Info{Proto: packet.ProtoTCP, Src: dev, Dst: host, SrcPort: 40000, DstPort: 22},
			packet.Info{Proto: packet.ProtoTCP, Src: host, Dst: dev, SrcPort: 22, DstPort: 40000}, true},
		{"udp",
			packet.Info{Proto: packet.ProtoUDP, Src: dev, Dst: host, SrcPort: 5353, DstPort: 53},
			packet.Info{Proto: packet.ProtoUDP, Src: host, Dst: dev, SrcPort: 53, DstPort: 5353}, true},
		{"icmp echo",
			packet.Info{Proto: packet.ProtoICMP, Src: dev, Dst: host, SrcPort: 7, DstPort: 7, ICMPType: 8},
			packet.Info{Proto: packet.ProtoICMP, Src: host, Dst: dev, SrcPort: 7, DstPort: 7, ICMPType: 0}, true},
		{"icmpv6 echo",
			packet.Info{Proto: packet.ProtoICMPv6, Src: dev6, Dst: netip.MustParseAddr("fd00::9"), SrcPort: 7, DstPort: 7, ICMPType: 128},
			packet.Info{Proto: packet.ProtoICMPv6, Src: netip.MustParseAddr("fd00::9"), Dst: dev6, SrcPort: 7, DstPort: 7, ICMPType: 129}, true},
		// Attacker: a LAN host sends an echo REQUEST carrying the
		// identifier of the device's live ping; only the reply may match.
		{"icmp echo request with a live id",
			packet.Info{Proto: packet.ProtoICMP, Src: dev, Dst: host, SrcPort: 7, DstPort: 7, ICMPType: 8},
			packet.Info{Proto: packet.ProtoICMP, Src: host, Dst: dev, SrcPort: 7, DstPort: 7, ICMPType: 8}, false},
		{"icmpv6 echo request with a live id",
			packet.Info{Proto: packet.ProtoICMPv6, Src: dev6, Dst: netip.MustParseAddr("fd00::9"), SrcPort: 7, DstPort: 7, ICMPType: 128},
			packet.Info{Proto: packet.ProtoICMPv6, Src: netip.MustParseAddr("fd00::9"), Dst: dev6, SrcPort: 7, DstPort: 7, ICMPType: 128}, false},
		{"icmpv6 reply type on icmpv4",
			packet.Info{Proto: packet.ProtoICMP, Src: dev, Dst: host, SrcPort: 7, DstPort: 7, ICMPType: 8},
			packet.Info{Proto: packet.ProtoICMP, Src: host, Dst: dev, SrcPort: 7, DstPort: 7, ICMPType: 129}, false},
		{"device answered a ping: the next request matches its reply",
			packet.Info{Proto: packet.ProtoICMP, Src: dev, Dst: host, SrcPort: 7, DstPort: 7, ICMPType: 0},
			packet.Info{Proto: packet.ProtoICMP, Src: host, Dst: dev, SrcPort: 7, DstPort: 7, ICMPType: 8}, true},
		{"icmp other id",
			packet.Info{Proto: packet.ProtoICMP, Src: dev, Dst: host, SrcPort: 7, DstPort: 7},
			packet.Info{Proto: packet.ProtoICMP, Src: host, Dst: dev, SrcPort: 8, DstPort: 8}, false},
		{"udp wrong port",
			packet.Info{Proto: packet.ProtoUDP, Src: dev, Dst: host, SrcPort: 5353, DstPort: 53},
			packet.Info{Proto: packet.ProtoUDP, Src: host, Dst: dev, SrcPort: 54, DstPort: 5353}, false},
		{"proto differs",
			packet.Info{Proto: packet.ProtoTCP, Src: dev, Dst: host, SrcPort: 1, DstPort: 2},
			packet.Info{Proto: packet.ProtoUDP, Src: host, Dst: dev, SrcPort: 2, DstPort: 1}, false},
		{"other host",
			packet.Info{Proto: packet.ProtoTCP, Src: dev, Dst: host, SrcPort: 1, DstPort: 2},
			packet.Info{Proto: packet.ProtoTCP, Src: netip.MustParseAddr("192.168.77.11"), Dst: dev, SrcPort: 2, DstPort: 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := New(10)
			out := FlowOf(&tt.out)
			if !tab.Add(out, t0) {
				t.Fatal("Add failed")
			}
			if got := tab.Has(FlowOf(&tt.in).Reverse(), t0.Add(time.Second)); got != tt.wantSame {
				t.Fatalf("Has(reply.Reverse()) = %v, want %v", got, tt.wantSame)
			}
			if tab.Has(FlowOf(&tt.in), t0) {
				t.Fatal("reply direction itself must not be in the table")
			}
			if out.Reverse().Reverse() != out {
				t.Fatal("Reverse is not an involution")
			}
		})
	}
}

func TestTimeouts(t *testing.T) {
	tests := []struct {
		proto uint8
		idle  time.Duration
	}{
		{packet.ProtoTCP, 5 * time.Minute},
		{packet.ProtoUDP, 60 * time.Second},
		{packet.ProtoICMP, 30 * time.Second},
		{packet.ProtoICMPv6, 30 * time.Second},
		{47, 60 * time.Second},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.proto), func(t *testing.T) {
			tab := New(10)
			f := Flow{Proto: tt.proto, Src: dev, Dst: host, SrcPort: 1, DstPort: 2}
			tab.Add(f, t0)
			if !tab.Has(f, t0.Add(tt.idle)) {
				t.Fatal("expired at exactly the timeout")
			}
			// Has refreshed last-seen: still alive one timeout later.
			if !tab.Has(f, t0.Add(2*tt.idle)) {
				t.Fatal("Has did not refresh")
			}
			// An older timestamp does not move last-seen backwards.
			if !tab.Has(f, t0) {
				t.Fatal("older now rejected")
			}
			if tab.Has(f, t0.Add(3*tt.idle+time.Nanosecond)) {
				t.Fatal("alive past the timeout")
			}
			if tab.Len() != 0 {
				t.Fatalf("idle flow not removed by Has: Len = %d", tab.Len())
			}
		})
	}
}

func TestCustomTimeout(t *testing.T) {
	tab := New(10)
	tab.UDPTimeout = time.Second
	f := Flow{Proto: packet.ProtoUDP, Src: dev, Dst: host, SrcPort: 1, DstPort: 2}
	tab.Add(f, t0)
	if tab.Has(f, t0.Add(2*time.Second)) {
		t.Fatal("custom timeout ignored")
	}
}

func TestAddRefreshes(t *testing.T) {
	tab := New(1)
	f := Flow{Proto: packet.ProtoUDP, Src: dev, Dst: host, SrcPort: 1, DstPort: 2}
	tab.Add(f, t0)
	if !tab.Add(f, t0.Add(50*time.Second)) {
		t.Fatal("re-adding an existing flow to a full table failed")
	}
	if !tab.Has(f, t0.Add(100*time.Second)) {
		t.Fatal("Add did not refresh last-seen")
	}
}

func TestExpire(t *testing.T) {
	tab := New(100)
	tcp := Flow{Proto: packet.ProtoTCP, Src: dev, Dst: host, SrcPort: 1, DstPort: 22}
	udp := Flow{Proto: packet.ProtoUDP, Src: dev, Dst: host, SrcPort: 1, DstPort: 53}
	icmp := Flow{Proto: packet.ProtoICMP, Src: dev, Dst: host, SrcPort: 9, DstPort: 9}
	for _, f := range []Flow{tcp, udp, icmp} {
		tab.Add(f, t0)
	}
	steps := []struct {
		at      time.Duration
		removed int
		left    int
	}{
		{10 * time.Second, 0, 3},
		{31 * time.Second, 1, 2},
		{61 * time.Second, 1, 1},
		{4 * time.Minute, 0, 1},
		{6 * time.Minute, 1, 0},
	}
	for _, s := range steps {
		if got := tab.Expire(t0.Add(s.at)); got != s.removed {
			t.Fatalf("Expire(+%v) = %d, want %d", s.at, got, s.removed)
		}
		if tab.Len() != s.left {
			t.Fatalf("after +%v Len = %d, want %d", s.at, tab.Len(), s.left)
		}
	}
}

func TestFull(t *testing.T) {
	tab := New(3)
	flow := func(p uint16) Flow { return Flow{Proto: packet.ProtoUDP, Src: dev, Dst: host, SrcPort: p, DstPort: 53} }
	for i := uint16(1); i <= 3; i++ {
		if !tab.Add(flow(i), t0.Add(time.Duration(i)*10*time.Second)) {
			t.Fatalf("Add %d failed", i)
		}
	}
	if tab.Add(flow(4), t0.Add(40*time.Second)) {
		t.Fatal("Add to a full table of live flows succeeded")
	}
	// Again right away: rate-limited sweep, still full.
	if tab.Add(flow(4), t0.Add(40*time.Second+time.Millisecond)) {
		t.Fatal("Add succeeded")
	}
	// At +75s flow 1 (seen +10s) is idle: Add expires it and succeeds.
	if !tab.Add(flow(4), t0.Add(75*time.Second)) {
		t.Fatal("Add did not expire an idle flow to make room")
	}
	if tab.Len() != 3 || tab.Has(flow(1), t0.Add(75*time.Second)) {
		t.Fatalf("Len = %d, want 3 without flow 1", tab.Len())
	}
	if New(0).Max() != 1 {
		t.Fatal("New(0) capacity")
	}
}

func TestPruneDelete(t *testing.T) {
	tab := New(100)
	for p := uint16(1); p <= 10; p++ {
		tab.Add(Flow{Proto: packet.ProtoTCP, Src: dev, Dst: host, SrcPort: p, DstPort: 22}, t0)
	}
	n := tab.Prune(func(f Flow) bool { return f.SrcPort%2 == 0 })
	if n != 5 || tab.Len() != 5 {
		t.Fatalf("Prune removed %d, Len %d", n, tab.Len())
	}
	f := Flow{Proto: packet.ProtoTCP, Src: dev, Dst: host, SrcPort: 2, DstPort: 22}
	if !tab.Delete(f) || tab.Delete(f) || tab.Len() != 4 {
		t.Fatal("Delete")
	}
}

func TestNoAlloc(t *testing.T) {
	tab := New(1000)
	f := Flow{Proto: packet.ProtoTCP, Src: dev6, Dst: netip.MustParseAddr("fd00::9"), SrcPort: 1, DstPort: 22}
	tab.Add(f, t0)
	now := t0
	n := testing.AllocsPerRun(1000, func() {
		now = now.Add(time.Millisecond)
		tab.Has(f, now)
		tab.Add(f, now)
		tab.Has(f.Reverse(), now)
	})
	if n != 0 {
		t.Fatalf("allocs per run = %v", n)
	}
}

func TestConcurrent(t *testing.T) {
	tab := New(500)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				now := t0.Add(time.Duration(i) * time.Millisecond)
				f := Flow{Proto: packet.ProtoUDP, Src: dev, Dst: host, SrcPort: uint16(g), DstPort: uint16(i % 700)}
				tab.Add(f, now)
				tab.Has(f.Reverse().Reverse(), now)
				switch i % 500 {
				case 0:
					tab.Expire(now.Add(2 * time.Minute))
				case 250:
					tab.Prune(func(f Flow) bool { return f.DstPort%3 != 0 })
				}
				_ = tab.Len()
			}
		}()
	}
	wg.Wait()
	if tab.Len() > 500 {
		t.Fatalf("Len %d above bound", tab.Len())
	}
}

func BenchmarkHas(b *testing.B) {
	tab := New(65536)
	flows := make([]Flow, 10000)
	for i := range flows {
		flows[i] = Flow{Proto: packet.ProtoTCP, Src: dev, Dst: netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}), SrcPort: uint16(i), DstPort: 443}
		tab.Add(flows[i], t0)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if !tab.Has(flows[i], t0) {
			b.Fatal("missing")
		}
		i++
		if i == len(flows) {
			i = 0
		}
	}
}

func BenchmarkHasParallel(b *testing.B) {
	tab := New(65536)
	flows := make([]Flow, 10000)
	for i := range flows {
		flows[i] = Flow{Proto: packet.ProtoTCP, Src: dev, Dst: netip.AddrFrom4([4]byte{192, 168, byte(i >> 8), byte(i)}), SrcPort: uint16(i), DstPort: 443}
		tab.Add(flows[i], t0)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			tab.Has(flows[i], t0)
			i = (i + 1) % len(flows)
		}
	})
}

// TestFullSweepRateLimit: a full table scans for idle flows at most once
// per sweepInterval, even when flows went idle in between (a flood of new
// flows against a full table costs one scan per interval, not one per
// packet), and scans again once the interval has passed, to the
// nanosecond.
func TestFullSweepRateLimit(t *testing.T) {
	tab := New(2)
	tab.UDPTimeout = sweepInterval / 2
	flow := func(p uint16) Flow { return Flow{Proto: packet.ProtoUDP, Src: dev, Dst: host, SrcPort: p, DstPort: 53} }
	tab.Add(flow(1), t0)
	tab.Add(flow(2), t0)
	sweep := t0.Add(sweepInterval / 4) // both live: the sweep frees nothing
	if tab.Add(flow(3), sweep) {
		t.Fatal("Add to a full table of live flows succeeded")
	}
	// Both flows are idle from t0+interval/2 on, but no new scan before
	// sweep+interval.
	if tab.Add(flow(3), sweep.Add(sweepInterval-time.Nanosecond)) {
		t.Fatal("Add scanned the table again within the sweep interval")
	}
	if tab.Len() != 2 {
		t.Fatalf("Len %d: the idle flows were expired within the interval", tab.Len())
	}
	if !tab.Add(flow(3), sweep.Add(sweepInterval)) {
		t.Fatal("no scan once the interval had passed")
	}
	if tab.Len() != 1 || !tab.Has(flow(3), sweep.Add(sweepInterval)) {
		t.Fatalf("after the scan: Len %d", tab.Len())
	}
}

// TestNoRefreshBackwards: Add and Has with an older time keep the newer
// last-seen, so a flow is not expired early by a late packet's timestamp.
func TestNoRefreshBackwards(t *testing.T) {
	tab := New(4)
	f := Flow{Proto: packet.ProtoUDP, Src: dev, Dst: host, SrcPort: 1, DstPort: 53}
	tab.Add(f, t0.Add(time.Minute))
	tab.Add(f, t0)
	if !tab.Has(f, t0.Add(2*time.Minute)) { // 60 s after the newer time: still live
		t.Fatal("Add moved last-seen backwards")
	}
	tab.Has(f, t0) // older again
	if !tab.Has(f, t0.Add(3*time.Minute)) {
		t.Fatal("Has moved last-seen backwards")
	}
}
