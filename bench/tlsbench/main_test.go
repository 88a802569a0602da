package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestParseIperf(t *testing.T) {
	sample, err := os.ReadFile("testdata/iperf-tcp.json")
	if err != nil {
		t.Fatal(err)
	}
	errReport, err := os.ReadFile("testdata/iperf-error.json")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		in      string
		want    iperfSummary
		wantErr string
	}{
		{name: "tcp report", in: string(sample), want: iperfSummary{Gbps: 21.91234154968277, Bytes: 2741370880, SenderGbps: 21.97712003535834, Retransmits: 0}},
		{name: "error report", in: string(errReport), wantErr: "Connection refused"},
		{name: "not json", in: "iperf3: error", wantErr: "iperf3 JSON"},
		{name: "empty end", in: `{"end":{}}`, wantErr: "no end.sum_received"},
		{name: "negative retransmits", in: `{"end":{"sum_sent":{"retransmits":-1},"sum_received":{"bytes":10,"bits_per_second":80}}}`, wantErr: "out of range"},
		{name: "minimal", in: `{"end":{"sum_sent":{"bits_per_second":2e9,"retransmits":3},"sum_received":{"bytes":1e9,"bits_per_second":1e9}}}`,
			want: iperfSummary{Gbps: 1, Bytes: 1e9, SenderGbps: 2, Retransmits: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseIperf([]byte(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func FuzzParseIperf(f *testing.F) {
	for _, p := range []string{"testdata/iperf-tcp.json", "testdata/iperf-error.json"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"end":{"sum_received":{"bytes":1e30,"bits_per_second":1}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := parseIperf(b)
		if err == nil && (s.Bytes == 0 || s.Gbps <= 0) {
			t.Fatalf("accepted report without data: %+v", s)
		}
	})
}

func TestRequestRoundTrip(t *testing.T) {
	tests := []request{
		{WriteSize: 65536, Seconds: 8},
		{Reverse: true, WriteSize: 1400, Seconds: 0.5},
		{Echo: true, WriteSize: 84, Seconds: 1},
		{WriteSize: maxWriteSize, Seconds: maxSeconds},
	}
	for _, r := range tests {
		got, err := decodeRequest(r.encode())
		if err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		if got != r {
			t.Fatalf("got %+v, want %+v", got, r)
		}
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	good := request{WriteSize: 1400, Seconds: 1}.encode()
	mut := func(f func(b []byte)) []byte {
		b := bytes.Clone(good)
		f(b)
		return b
	}
	tests := []struct {
		name, want string
		in         []byte
	}{
		{"short", "bytes, want", good[:5]},
		{"magic", "magic", mut(func(b []byte) { b[0] = 'X' })},
		{"direction", "direction", mut(func(b []byte) { b[3] = 7 })},
		{"zero write size", "write size", mut(func(b []byte) { copy(b[4:8], []byte{0, 0, 0, 0}) })},
		{"huge write size", "write size", mut(func(b []byte) { copy(b[4:8], []byte{0xff, 0, 0, 0}) })},
		{"zero duration", "duration", mut(func(b []byte) { copy(b[8:12], []byte{0, 0, 0, 0}) })},
		{"huge duration", "duration", mut(func(b []byte) { copy(b[8:12], []byte{0xff, 0xff, 0xff, 0xff}) })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeRequest(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want containing %q", err, tt.want)
			}
		})
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add(request{WriteSize: 65536, Seconds: 8}.encode())
	f.Add(request{Reverse: true, WriteSize: 1400, Seconds: 2}.encode())
	f.Add([]byte("TB1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRequest(b)
		if err != nil {
			return
		}
		if r.WriteSize < 1 || r.WriteSize > maxWriteSize || r.Seconds <= 0 || r.Seconds > maxSeconds {
			t.Fatalf("accepted out-of-range request %+v", r)
		}
	})
}

func FuzzDecodeResult(f *testing.F) {
	f.Add(result{Bytes: 1 << 30, Elapsed: time.Second, CPU: time.Second}.encode())
	f.Add(make([]byte, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeResult(b)
		if err == nil && (r.Elapsed < 0 || r.CPU < 0) {
			t.Fatalf("accepted negative durations %+v", r)
		}
	})
}

// writePKI writes a CA and a server certificate for 127.0.0.1 into dir.
func writePKI(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "srv"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, cert, key = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "srv.crt"), filepath.Join(dir, "srv.key")
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{ca, "CERTIFICATE", caDER}, {cert, "CERTIFICATE", srvDER}, {key, "PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return ca, cert, key
}

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestClientServer runs a real server and client over loopback in both
// directions and with both write sizes, and checks the printed line.
func TestClientServer(t *testing.T) {
	ca, cert, key := writePKI(t, t.TempDir())
	addr := freeAddr(t)
	goroutines := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	srvErr := make(chan error, 1)
	var srvOut bytes.Buffer
	go func() { srvErr <- runServer(ctx, []string{"--listen", addr, "--cert", cert, "--key", key}, &srvOut) }()
	waitListen(t, addr)
	tests := []struct {
		name string
		args []string
		dir  string
	}{
		{"up 64k", []string{"--write-size", "65536"}, "dir=up"},
		{"up 1400", []string{"--write-size", "1400"}, "dir=up"},
		{"down 64k", []string{"--write-size", "65536", "--reverse"}, "dir=down"},
		{"echo", []string{"--write-size", "84", "--echo", "3"}, "rtt_avg_ms="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"client", "--connect", addr, "--ca", ca, "--seconds", "0.3"}, tt.args...)
			if code := run(args, &out, &errb); code != 0 {
				t.Fatalf("client exit %d: %s", code, errb.String())
			}
			line := out.String()
			wants := []string{tt.dir, "cipher=TLS_"}
			if tt.name != "echo" {
				wants = append(wants, "gbps=", "bytes=")
			}
			for _, want := range wants {
				if !strings.Contains(line, want) {
					t.Fatalf("output %q lacks %q", line, want)
				}
			}
			if strings.Contains(line, "bytes=0 ") {
				t.Fatalf("no bytes moved: %q", line)
			}
		})
	}
	select {
	case err := <-srvErr:
		t.Fatalf("server exited early (%v): %s", err, srvOut.String())
	default:
	}
	cancel()
	select {
	case err := <-srvErr:
		if err != nil {
			t.Fatalf("server: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server did not stop when its context ended")
	}
	for i := 0; runtime.NumGoroutine() > goroutines && i < 100; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines {
		t.Fatalf("%d goroutines after stop, %d before", n, goroutines)
	}
}

func TestClientFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing connect", []string{"client", "--ca", "x"}, "required"},
		{"bad write size", []string{"client", "--connect", "a:1", "--ca", "x", "--write-size", "0"}, "write-size"},
		{"bad seconds", []string{"client", "--connect", "a:1", "--ca", "x", "--seconds", "0"}, "seconds"},
		{"negative echo", []string{"client", "--connect", "a:1", "--ca", "x", "--echo", "-1"}, "--echo"},
		{"echo and reverse", []string{"client", "--connect", "a:1", "--ca", "x", "--echo", "3", "--reverse"}, "exclude"},
		{"missing ca file", []string{"client", "--connect", "a:1", "--ca", "/nonexistent/ca.crt"}, "read CA"},
		{"server missing flags", []string{"server", "--listen", "127.0.0.1:0"}, "required"},
		{"unknown command", []string{"bogus"}, "unknown command"},
		{"iperf-json no file", []string{"iperf-json", "/nonexistent.json"}, "open iperf3 report"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(tt.args, &out, &errb); code == 0 {
				t.Fatalf("exit 0, want failure")
			}
			if !strings.Contains(errb.String(), tt.want) {
				t.Fatalf("stderr %q lacks %q", errb.String(), tt.want)
			}
		})
	}
}

func TestIperfJSONCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"iperf-json", "testdata/iperf-tcp.json"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	want := "iperf gbps=21.912 bytes=2741370880 sender_gbps=21.977 retransmits=0\n"
	if out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}

func waitListen(t *testing.T, addr string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("server never listened on %s", addr)
}
