package tunnel

import (
	"bytes"
	"testing"
)

func TestVnetPoolDetach(t *testing.T) {
	pool := NewVnetPool(1024)
	gsoHdr := VnetHdr{Flags: VnetFlagNeedsCsum, GSOType: VnetGSOTCPv4, HdrLen: 40, GSOSize: 1448, CsumStart: 20, CsumOffset: 16}
	tests := []struct {
		name     string
		n        int
		hdr      VnetHdr
		wantCopy bool
	}{
		{"small plain packet is copied", 84, VnetHdr{}, true},
		{"small class boundary is copied", 1024, VnetHdr{}, true},
		{"large packet keeps its buffer", 1025, VnetHdr{}, false},
		{"super-packet keeps its buffer", 65000, gsoHdr, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cur := pool.Get()
			tt.hdr.Encode(cur.Buf[Headroom-VnetHdrLen:])
			for i := 0; i < tt.n; i++ {
				cur.Buf[Headroom+i] = byte(i)
			}
			p := pool.Detach(cur, tt.n)
			if (p != cur) != tt.wantCopy {
				t.Fatalf("copied = %v, want %v", p != cur, tt.wantCopy)
			}
			if tt.wantCopy && cap(p.Buf) != Headroom+1024 {
				t.Fatalf("small copy has a %d-byte buffer", cap(p.Buf))
			}
			if p.Size != tt.n || p.GSO != !tt.hdr.IsZero() {
				t.Fatalf("Size %d GSO %v, want %d %v", p.Size, p.GSO, tt.n, !tt.hdr.IsZero())
			}
			if !bytes.Equal(p.Buf[Headroom-VnetHdrLen:Headroom+tt.n], cur.Buf[Headroom-VnetHdrLen:Headroom+tt.n]) {
				t.Fatal("header or packet bytes differ from what was read")
			}
			pool.Put(p)
			if p != cur {
				pool.Put(cur)
			}
		})
	}
}

func TestVnetPoolPutIgnoresForeignPackets(t *testing.T) {
	pool := NewVnetPool(1024)
	pool.Put(&VnetPacket{Size: 100}) // e.g. from a test; no buffer
	for range 4 {
		if p := pool.Detach(pool.Get(), 10); cap(p.Buf) != Headroom+1024 {
			t.Fatalf("small class handed out a %d-byte buffer", cap(p.Buf))
		}
	}
}
