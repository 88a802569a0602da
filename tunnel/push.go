package tunnel

// Live push (ARCHITECTURE.md, "Wire protocol"): when a reload changes what a live
// session is pushed (routes, DNS, search domains, MTU), the gateway sends
// the session's whole new Config in a FramePush, only to a device whose
// hello offered CapPush and whose config answer listed it. The laptop
// reconciles its routes, DNS and MTU with it without reconnecting. The
// address never changes by push: a push with another address is a protocol
// error and the laptop reconnects.

import "fmt"

// FramePush carries a JSON Config, gateway -> device, at any time after the
// first FrameConfig; only sent when both ends negotiated CapPush.
const FramePush byte = 0x14

// CapPush is the hello/config capability for FramePush.
const CapPush = "push"

// DecodePush decodes and validates a FramePush payload for a session whose
// config is cur: the address and gateway must be the ones in force.
func DecodePush(b []byte, cur Config) (Config, error) {
	c, err := DecodeConfig(b)
	if err != nil {
		return Config{}, err
	}
	if c.Address != cur.Address || c.Gateway != cur.Gateway || c.Address6 != cur.Address6 || c.Gateway6 != cur.Gateway6 {
		return Config{}, fmt.Errorf("%w: pushed config changes the address (%v -> %v)", ErrProtocol, cur.Addresses(), c.Addresses())
	}
	return c, nil
}
