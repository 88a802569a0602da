package tunnel

import (
	"errors"
	"net/netip"
	"testing"
)

func TestDecodePush(t *testing.T) {
	cur := goodConfig()
	next := cur
	next.Routes = append([]netip.Prefix{netip.MustParsePrefix("10.99.0.0/16")}, cur.Routes...)
	next.MTU = 1300
	b, _ := EncodeConfig(next)
	got, err := DecodePush(b, cur)
	if err != nil || got.MTU != 1300 || len(got.Routes) != len(next.Routes) {
		t.Fatalf("push %+v %v", got, err)
	}
	moved := next
	moved.Address = netip.MustParsePrefix("10.8.0.77/24")
	b, _ = EncodeConfig(moved)
	if _, err := DecodePush(b, cur); !errors.Is(err, ErrProtocol) {
		t.Fatalf("a push that moves the address: %v, want a protocol error", err)
	}
	if _, err := DecodePush([]byte(`{"version":1,"mtu":1}`), cur); err == nil {
		t.Fatal("invalid pushed config accepted")
	}
	if err := checkFrame(FramePush, 10); err != nil {
		t.Fatalf("push frame refused by checkFrame: %v", err)
	}
}

// FuzzDecodePush: any bytes as a push payload never panic; what decodes
// keeps the address in force.
func FuzzDecodePush(f *testing.F) {
	cur := goodConfig()
	b, _ := EncodeConfig(cur)
	f.Add(b)
	f.Add([]byte(`{"version":1,"address":"10.8.0.9/24","mtu":1400}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := DecodePush(in, cur)
		if err != nil {
			return
		}
		if c.Address != cur.Address || c.Validate() != nil {
			t.Fatalf("accepted push %+v", c)
		}
	})
}
