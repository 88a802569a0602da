package server

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/sallyport/sallyport/tunnel"
)

// TestDropStatusFields: the JSON of a session's drop counters has exactly
// one field per tunnel.GatewayDrops reason, named by its word, and Get
// reads each one back, so status, metrics and the CLI columns agree.
func TestDropStatusFields(t *testing.T) {
	var c tunnel.DropCounts
	for i, r := range tunnel.GatewayDrops {
		c.Add(r, uint64(i+1))
	}
	d := dropStatus(&c)
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]uint64
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if want := c.Map(tunnel.GatewayDrops); !reflect.DeepEqual(got, want) {
		t.Fatalf("status JSON %v, want %v", got, want)
	}
	for i, r := range tunnel.GatewayDrops {
		if d.Get(r) != uint64(i+1) {
			t.Errorf("Get(%s) = %d, want %d", r, d.Get(r), i+1)
		}
	}
	if d.Get(tunnel.DropOffline) != 0 {
		t.Error("a laptop-only reason has a gateway count")
	}
}
