package tunnel

import (
	"strings"
	"testing"
)

// TestReasonVocabulary: every reason appears once, every reason a device
// is told has a sentence for the employee, and the reasons that only ever
// end a handshake before TLS completes are never told.
func TestReasonVocabulary(t *testing.T) {
	seen := map[Reason]bool{}
	for _, ri := range Reasons {
		if seen[ri.Reason] {
			t.Errorf("%s listed twice", ri.Reason)
		}
		seen[ri.Reason] = true
		if ri.Told && ri.Sentence == "" {
			t.Errorf("%s is told to the device but has no sentence", ri.Reason)
		}
		if ri.Permanent && !ri.Refusal {
			t.Errorf("%s is permanent but not a refusal", ri.Reason)
		}
		if len(ri.Reason) > MaxReasonLen || strings.ContainsAny(string(ri.Reason), " \t\n") {
			t.Errorf("%q is not a short code", ri.Reason)
		}
		got, ok := LookupReason(string(ri.Reason))
		if !ok || got != ri {
			t.Errorf("LookupReason(%s) = %+v, %v", ri.Reason, got, ok)
		}
	}
	for _, r := range []Reason{ReasonNoCert, ReasonHandshake, ReasonOverload, ReasonPeerClosed, ReasonError, ReasonStalled} {
		if r.Told() {
			t.Errorf("%s is told to the device", r)
		}
	}
	for _, r := range []Reason{ReasonRevoked, ReasonKicked, ReasonDrain, ReasonUnknownCA, ReasonReplaced} {
		if !r.Told() {
			t.Errorf("%s is not told to the device", r)
		}
	}
	if _, ok := LookupReason("no-such-reason"); ok {
		t.Error("an unknown code is in the vocabulary")
	}
	// What a laptop tells the gateway is a code of the same form, and
	// none of the gateway's (a laptop's shutdown is no gateway shutdown).
	for _, r := range LaptopReasons {
		if _, ok := LookupReason(string(r)); ok || seen[r] {
			t.Errorf("laptop reason %s is also a gateway reason", r)
		}
		if len(r) > MaxReasonLen || strings.ContainsAny(string(r), " \t\n") {
			t.Errorf("laptop reason %q is not a short code", r)
		}
		seen[r] = true
	}
}

func TestDropCounts(t *testing.T) {
	var c DropCounts
	c.Add(DropSpoofed, 2)
	c.Add(DropQuiet, 5)
	c.Add(Accept, 7)
	c.Add(numDropReasons+3, 1)
	if c.Load(DropSpoofed) != 2 || c.Load(DropQuiet) != 0 || c.Load(Accept) != 0 || c.Load(numDropReasons+3) != 0 {
		t.Fatalf("counts %v", c.Map(append([]DropReason{Accept, DropQuiet}, GatewayDrops...)))
	}
	m := c.Map(GatewayDrops)
	if len(m) != len(GatewayDrops) || m["spoofed"] != 2 || m["no_flow"] != 0 {
		t.Fatalf("Map = %v", m)
	}
	names := map[string]bool{}
	for r := Accept; r < numDropReasons; r++ {
		if names[r.String()] || r.String() == "unknown" {
			t.Errorf("drop reason %d has name %q", r, r.String())
		}
		names[r.String()] = true
	}
	if DropReason(200).String() != "unknown" {
		t.Error("an out-of-range reason has a name")
	}
}
