package tunnel

import "sync"

// VnetPacket is one packet read unsplit from a VnetDevice: its virtio-net
// header in the VnetHdrLen bytes before Headroom, the packet at Headroom.
// The laptop's send queue and the gateway's per-device queues hold these.
type VnetPacket struct {
	Buf  []byte
	Size int
	GSO  bool // the header is not all zero (GSO or partial checksum)
}

// VnetPool recycles VnetPackets in two classes: MaxPacket buffers to read
// into, and small ones that small packets are copied to, so a queue of ACKs
// does not pin 64 KiB per packet.
type VnetPool struct {
	small      int
	big, smalP sync.Pool
}

// NewVnetPool returns a pool whose small class holds packets of up to small
// bytes.
func NewVnetPool(small int) *VnetPool {
	v := &VnetPool{small: small}
	v.big.New = func() any { return &VnetPacket{Buf: make([]byte, Headroom+MaxPacket)} }
	v.smalP.New = func() any { return &VnetPacket{Buf: make([]byte, Headroom+small)} }
	return v
}

// Get returns a packet with room for ReadVnet.
func (v *VnetPool) Get() *VnetPacket { return v.big.Get().(*VnetPacket) }

// Put returns p to its class; a packet of neither class (not from this
// pool) is left to the garbage collector.
func (v *VnetPool) Put(p *VnetPacket) {
	switch cap(p.Buf) {
	case Headroom + MaxPacket:
		v.big.Put(p)
	case Headroom + v.small:
		v.smalP.Put(p)
	}
}

// Detach returns the packet to queue after ReadVnet read n bytes into cur,
// with Size and GSO set: a small copy when n fits the small class, else cur
// itself, and then the reader needs a fresh cur from Get.
func (v *VnetPool) Detach(cur *VnetPacket, n int) *VnetPacket {
	p := cur
	if n <= v.small {
		p = v.smalP.Get().(*VnetPacket)
		copy(p.Buf[Headroom-VnetHdrLen:], cur.Buf[Headroom-VnetHdrLen:Headroom+n])
	}
	p.Size = n
	p.GSO = !DecodeVnetHdr(p.Buf[Headroom-VnetHdrLen:]).IsZero()
	return p
}
