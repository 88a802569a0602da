// Command demohelper is the tiny traffic tool scripts/demo.sh runs inside its
// network namespaces, so the demo needs nothing beyond bash, iproute2 and
// sallyport: an ICMP echo client (no ping binary needed), and a TCP server
// and client that move a block of random bytes and print its SHA-256.
//
//	demohelper ping ADDR COUNT        prints "received N/COUNT"
//	demohelper serve ADDR             each connection gets 1 MiB; prints its sha256
//	demohelper fetch ADDR             reads to EOF; prints "bytes=N sha256=X"
package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: demohelper ping ADDR COUNT | serve ADDR | fetch ADDR")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "ping":
		n := 3
		if len(os.Args) > 3 {
			if n, err = strconv.Atoi(os.Args[3]); err != nil {
				break
			}
		}
		err = ping(os.Args[2], n)
	case "serve":
		err = serve(os.Args[2])
	case "fetch":
		err = fetch(os.Args[2])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demohelper:", err)
		os.Exit(1)
	}
}

// ping sends count ICMP echo requests over a raw socket and exits non-zero
// when none is answered.
func ping(addr string, count int) error {
	ip := net.ParseIP(addr)
	if ip == nil {
		return fmt.Errorf("ping: bad address %q", addr)
	}
	c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return fmt.Errorf("ping: icmp socket: %w", err)
	}
	defer c.Close()
	id := uint16(os.Getpid())
	got := 0
	buf := make([]byte, 1500)
	for seq := 1; seq <= count; seq++ {
		msg := make([]byte, 64)
		msg[0] = 8 // echo request
		binary.BigEndian.PutUint16(msg[4:], id)
		binary.BigEndian.PutUint16(msg[6:], uint16(seq))
		binary.BigEndian.PutUint16(msg[2:], checksum(msg))
		start := time.Now()
		if _, err := c.WriteTo(msg, &net.IPAddr{IP: ip}); err != nil {
			fmt.Printf("  seq=%d send failed: %v\n", seq, err)
			continue
		}
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				fmt.Printf("  seq=%d no reply\n", seq)
				break
			}
			if n >= 8 && buf[0] == 0 && binary.BigEndian.Uint16(buf[4:]) == id &&
				binary.BigEndian.Uint16(buf[6:]) == uint16(seq) && from.String() == ip.String() {
				fmt.Printf("  reply from %s: seq=%d time=%.2f ms\n", ip, seq, float64(time.Since(start).Microseconds())/1000)
				got++
				break
			}
		}
	}
	fmt.Printf("received %d/%d\n", got, count)
	if got == 0 {
		return fmt.Errorf("ping %s: no replies", addr)
	}
	return nil
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// serve sends 1 MiB of random bytes to every connection and prints the
// SHA-256 of what it sent.
func serve(addr string) error {
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	fmt.Println("listening on", addr)
	return serveOn(ln, os.Stdout)
}

// serveOn is serve's accept loop on ln, printing to out; it returns when ln
// is closed.
func serveOn(ln net.Listener, out io.Writer) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("serve: accept: %w", err)
		}
		go func() {
			defer c.Close()
			data := make([]byte, 1<<20)
			_, _ = rand.Read(data)
			if _, err := c.Write(data); err != nil {
				fmt.Fprintln(out, "send failed:", err)
				return
			}
			sum := sha256.Sum256(data)
			fmt.Fprintf(out, "sent bytes=%d sha256=%s to %s\n", len(data), hex.EncodeToString(sum[:]), c.RemoteAddr())
		}()
	}
}

// fetch reads everything a server sends and prints its size and SHA-256.
func fetch(addr string) error {
	c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		return fmt.Errorf("fetch: read: %w", err)
	}
	fmt.Printf("bytes=%d sha256=%s\n", n, hex.EncodeToString(h.Sum(nil)))
	return nil
}
