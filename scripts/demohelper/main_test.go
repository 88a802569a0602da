package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/sallyport/sallyport/internal/testenv"
)

// TestChecksum: the RFC 1071 Internet checksum of an ICMP echo request, and
// a message carrying its own checksum sums to zero.
func TestChecksum(t *testing.T) {
	// Echo request, id 0x1234, seq 1, no payload: 0800 0000 1234 0001.
	msg := []byte{8, 0, 0, 0, 0x12, 0x34, 0, 1}
	if got := checksum(msg); got != 0xe5ca {
		t.Errorf("checksum = %#04x, want 0xe5ca", got)
	}
	msg[2], msg[3] = 0xe5, 0xca
	if got := checksum(msg); got != 0 {
		t.Errorf("checksum over a checksummed message = %#04x, want 0", got)
	}
	// Carries fold back in: 0xffff + 0x0001 = 0x0001 after folding.
	if got := checksum([]byte{0xff, 0xff, 0x00, 0x01}); got != 0xfffe {
		t.Errorf("checksum with a carry = %#04x, want 0xfffe", got)
	}
}

// TestFetch: fetch reads to EOF from a loopback server and prints the size
// and SHA-256 of what it got.
func TestFetch(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	data := []byte(strings.Repeat("sallyport ", 100000))
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Write(data)
		c.Close()
	}()
	// As demo.sh runs it: demohelper fetch ADDR.
	os.Args = []string{"demohelper", "fetch", ln.Addr().String()}
	out := captureStdout(t, main)
	sum := sha256.Sum256(data)
	if want := "bytes=1000000 sha256=" + hex.EncodeToString(sum[:]) + "\n"; out != want {
		t.Errorf("fetch printed %q, want %q", out, want)
	}
	ln.Close()
	if err := fetch(ln.Addr().String()); err == nil {
		t.Error("fetch from a closed port succeeded")
	}
	if err := ping("not-an-ip", 1); err == nil {
		t.Error("ping of a bad address succeeded")
	}
}

func captureStdout(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() { b, _ := io.ReadAll(r); done <- string(b) }()
	f()
	os.Stdout = old
	w.Close()
	return <-done
}

// TestPing: echo requests to loopback are answered and counted (a raw
// ICMP socket needs root).
func TestPing(t *testing.T) {
	testenv.Root(t, "a raw ICMP socket")
	out := captureStdout(t, func() {
		if err := ping("127.0.0.1", 2); err != nil {
			t.Error(err)
		}
	})
	if !strings.HasSuffix(out, "received 2/2\n") || strings.Count(out, "reply from 127.0.0.1") != 2 {
		t.Errorf("ping 127.0.0.1 2:\n%s", out)
	}
}

// lockedBuffer is an io.Writer several goroutines may print to.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestServeFetch: what demo.sh checks across the tunnel: each connection
// gets its own 1 MiB, and the SHA-256 the server printed is the one fetch
// printed.
func TestServeFetch(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var log lockedBuffer
	done := make(chan error, 1)
	go func() { done <- serveOn(ln, &log) }()
	var sums []string
	for range 2 {
		out := captureStdout(t, func() {
			if err := fetch(ln.Addr().String()); err != nil {
				t.Error(err)
			}
		})
		sum, ok := strings.CutPrefix(strings.TrimSpace(out), "bytes=1048576 sha256=")
		if !ok || len(sum) != 64 {
			t.Fatalf("fetch printed %q", out)
		}
		// The server prints before it closes, and fetch reads to the close.
		if !strings.Contains(log.String(), "sent bytes=1048576 sha256="+sum+" to ") {
			t.Errorf("server and fetch disagree: fetch %s, server:\n%s", sum, log.String())
		}
		sums = append(sums, sum)
	}
	if sums[0] == sums[1] {
		t.Error("two connections got the same bytes")
	}
	ln.Close()
	if err := <-done; err == nil || !strings.Contains(err.Error(), "accept") {
		t.Errorf("serve after its listener closed: %v", err)
	}
}
