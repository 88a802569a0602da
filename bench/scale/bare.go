package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/sallyport/sallyport/pki"
	"github.com/sallyport/sallyport/tunnel"
)

// bareHandshakeTimeout bounds a bare handshake plus the hello, like the
// gateway's handshake_timeout; bareHold bounds how long a bare session may
// stay open (the churn phase closes each at once).
const (
	bareHandshakeTimeout = 10 * time.Second
	bareHold             = 2 * time.Minute
	maxHelloFrame        = 4096
)

// bareConfigFrame is the fixed answer to every hello: a valid config frame
// of the size the gateway sends.
func bareConfigFrame() ([]byte, error) {
	payload, err := tunnel.EncodeConfig(tunnel.Config{
		Version:   tunnel.ProtocolVersion,
		Address:   netip.MustParsePrefix("10.99.0.2/16"),
		Gateway:   netip.MustParseAddr("10.99.0.1"),
		Routes:    []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")},
		MTU:       1500,
		Keepalive: 10 * time.Second,
		Timeout:   35 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	return tunnel.AppendFrame(nil, tunnel.FrameConfig, payload)
}

// bareTLS is the bare server's TLS setup: the tunnel's TLS defaults and
// crypto/tls's own client certificate verification against the CA.
func bareTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", certFile, err)
	}
	cas, err := pki.LoadCertificates(caFile)
	if err != nil {
		return nil, err
	}
	conf := &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pki.NewPool(cas),
	}
	tunnel.TLSDefaults(conf)
	return conf, nil
}

func runBare(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("scale bare", flag.ContinueOnError)
	listen := fs.String("listen", "", "address to listen on (required)")
	certFile := fs.String("cert", "", "server certificate chain, PEM (required)")
	keyFile := fs.String("key", "", "server key, PEM (required)")
	caFile := fs.String("ca", "", "CA bundle that issues device certificates (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *listen == "" || *certFile == "" || *keyFile == "" || *caFile == "" {
		return errors.New("--listen, --cert, --key and --ca are required")
	}
	conf, err := bareTLS(*certFile, *keyFile, *caFile)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "scale bare: listening on %s\n", ln.Addr())
	return serveBare(ctx, ln, conf)
}

// serveBare accepts until ctx ends, then closes every connection and
// waits for their goroutines.
func serveBare(ctx context.Context, ln net.Listener, conf *tls.Config) error {
	frame, err := bareConfigFrame()
	if err != nil {
		return err
	}
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
	)
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		mu.Lock()
		if ctx.Err() != nil {
			mu.Unlock()
			c.Close()
			return nil
		}
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			bareSession(c, conf, frame)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		})
	}
}

// bareSession: handshake, read the hello frame, send the config frame,
// then discard whatever comes until the device closes (or bareHold).
func bareSession(c net.Conn, conf *tls.Config, configFrame []byte) {
	defer c.Close()
	tc := tls.Server(c, conf)
	_ = tc.SetDeadline(time.Now().Add(bareHandshakeTimeout))
	if err := tc.Handshake(); err != nil {
		return
	}
	var hdr [tunnel.HeaderLen]byte
	if _, err := io.ReadFull(tc, hdr[:]); err != nil {
		return
	}
	n := int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
	if hdr[0] != tunnel.FrameHello || n > maxHelloFrame {
		return
	}
	if _, err := io.CopyN(io.Discard, tc, int64(n)); err != nil {
		return
	}
	if _, err := tc.Write(configFrame); err != nil {
		return
	}
	_ = tc.SetDeadline(time.Now().Add(bareHold))
	_, _ = io.Copy(io.Discard, tc)
}
