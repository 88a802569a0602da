package client

import (
	"bytes"
	"testing"
	"time"

	"github.com/sallyport/sallyport/tunnel"
)

// TestGatewayStopsReading: a gateway that stops reading but keeps sending
// keepalives (so the silence timeout never fires) is dropped once a write
// to it has been blocked for the pushed timeout, shown as the gateway no
// longer answering, and the client reconnects. Both send paths: batch and
// raw (vnet, sendq.go).
func TestGatewayStopsReading(t *testing.T) {
	for _, vnet := range []bool{false, true} {
		name := map[bool]string{false: "batch", true: "raw"}[vnet]
		t.Run(name, func(t *testing.T) {
			noLeaks(t)
			e := startClient(t, envOpt{vnet: vnet})
			pc := testConfig()
			pc.Keepalive, pc.Timeout = 20*time.Millisecond, 300*time.Millisecond
			s, _ := e.up(pc)
			<-e.ready

			stop := make(chan struct{})
			done := make(chan struct{})
			go func() { // the gateway: keepalives only, never a read
				defer close(done)
				tick := time.NewTicker(10 * time.Millisecond)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						if s.w.WriteControl(tunnel.FrameKeepalive, nil) != nil {
							return
						}
					}
				}
			}()
			pkt := ipv4(17, bytes.Repeat([]byte{'u'}, 1300), make([]byte, 8))
			if vnet {
				pkt = append(make([]byte, tunnel.VnetHdrLen), pkt...)
			}
			go func() { // the laptop uploads until the test ends (bounded in count)
				for range 1_000_000 {
					select {
					case <-stop:
						return
					case e.tun.toNet <- pkt:
					}
				}
			}()
			e.status("gateway-silent", func(st Status) bool { return st.Refused == codeSilent })
			close(stop)
			<-done
			s.tls.Close()
			e.up(pc)
			e.status("connected again", func(st Status) bool { return st.Connected })
		})
	}
}
