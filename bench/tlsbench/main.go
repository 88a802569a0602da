// Command tlsbench is the raw-TLS ceiling measurement and the small parsing
// helper behind `make bench` (scripts/bench.sh).
//
// A raw TLS 1.3 stream between the laptop and gateway namespaces, with the
// same certificates and the same TLS settings as the tunnel (TLS 1.3 only,
// AES-128-GCM negotiated on AES-NI hardware, dynamic record sizing off), is
// the most any TLS tunnel can move here. Writing 64 KiB at a time shows the
// batched ceiling; one write per 1400-byte packet shows what an unbatched
// relay would get.
//
//	tlsbench server --listen ADDR --cert C --key K [--ca CA]
//	tlsbench client --connect ADDR --ca CA [--server-name N] [--cert C --key K]
//	                [--write-size 65536|1400] [--seconds N] [--reverse | --echo N]
//	tlsbench iperf-json FILE
//
// The client prints one line of key=value pairs, e.g.
//
//	tlsbench dir=up write_size=65536 seconds=8.001 bytes=7012345678 gbps=7.012 cpu_s=9.81 cipher=TLS_AES_128_GCM_SHA256
//
// With --echo N the client instead sends N messages of --write-size bytes
// 50 ms apart, the server sends each back, and the line reports the round
// trips (rtt_avg_ms, rtt_max_ms): the idle RTT floor of a TLS relay here.
//
// where gbps is measured by the receiving side and cpu_s is the CPU time of
// both tlsbench processes during the transfer. iperf-json reads the JSON
// report of `iperf3 -J` and prints one such line (gbps, bytes, retransmits),
// so the script needs neither python nor jq.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// alpn is the protocol name both ends agree on; not the tunnel's, so a
// tlsbench client can never be mistaken for a sallyport device.
const alpn = "tlsbench/1"

// maxWriteSize bounds --write-size and the size the server accepts.
const maxWriteSize = 1 << 20

// maxSeconds bounds the duration a client may ask the server to send for.
const maxSeconds = 600

// echoInterval spaces --echo round trips; maxEcho keeps a run (with its 3
// warm-up round trips) inside maxSeconds, which also bounds the server's
// deadline.
const (
	echoInterval = 50 * time.Millisecond
	maxEcho      = 10000
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage:
  tlsbench server --listen ADDR --cert C --key K [--ca CA]
  tlsbench client --connect ADDR --ca CA [--server-name N] [--cert C --key K]
                  [--write-size 65536] [--seconds 8] [--reverse]
  tlsbench iperf-json FILE
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "server":
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err = runServer(ctx, args[1:], stderr)
		stop()
	case "client":
		err = runClient(args[1:], stdout, stderr)
	case "iperf-json":
		err = runIperfJSON(args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "tlsbench: unknown command %q\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "tlsbench %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// baseTLS is the tunnel's TLS setup: TLS 1.3 only (whose suite order Go
// picks: AES-128-GCM first on AES-NI hardware) and full-size records from
// the first byte.
func baseTLS() *tls.Config {
	return &tls.Config{
		MinVersion:                  tls.VersionTLS13,
		NextProtos:                  []string{alpn},
		DynamicRecordSizingDisabled: true,
		CurvePreferences:            []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256},
	}
}

func loadPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read CA %s: %w", path, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA %s: no PEM certificates", path)
	}
	return pool, nil
}

// request is what the client asks for in its first bytes: the direction
// and, when the server sends, the write size and duration.
type request struct {
	Reverse   bool // server sends, client receives
	Echo      bool // server sends back what it reads (RTT); excludes Reverse
	WriteSize int
	Seconds   float64
}

// requestLen is the encoded size of a request.
const requestLen = 12

// magic starts every request.
var magic = [3]byte{'T', 'B', '1'}

func (r request) encode() []byte {
	b := make([]byte, requestLen)
	copy(b, magic[:])
	if r.Reverse {
		b[3] = 1
	}
	if r.Echo {
		b[3] = 2
	}
	binary.BigEndian.PutUint32(b[4:8], uint32(r.WriteSize))
	binary.BigEndian.PutUint32(b[8:12], uint32(r.Seconds*1000))
	return b
}

// decodeRequest parses and bounds-checks a request from the network.
func decodeRequest(b []byte) (request, error) {
	var r request
	if len(b) != requestLen {
		return r, fmt.Errorf("request: %d bytes, want %d", len(b), requestLen)
	}
	if [3]byte(b[:3]) != magic {
		return r, errors.New("request: bad magic")
	}
	switch b[3] {
	case 0:
	case 1:
		r.Reverse = true
	case 2:
		r.Echo = true
	default:
		return r, fmt.Errorf("request: bad direction %d", b[3])
	}
	ws := binary.BigEndian.Uint32(b[4:8])
	if ws < 1 || ws > maxWriteSize {
		return r, fmt.Errorf("request: write size %d out of range 1..%d", ws, maxWriteSize)
	}
	r.WriteSize = int(ws)
	ms := binary.BigEndian.Uint32(b[8:12])
	if ms < 1 || ms > maxSeconds*1000 {
		return r, fmt.Errorf("request: duration %d ms out of range", ms)
	}
	r.Seconds = float64(ms) / 1000
	return r, nil
}

// result is what the receiving end reports back when the sender is the
// client: bytes received, receive duration and the server's CPU time.
type result struct {
	Bytes   uint64
	Elapsed time.Duration
	CPU     time.Duration
}

const resultLen = 24

func (r result) encode() []byte {
	b := make([]byte, resultLen)
	binary.BigEndian.PutUint64(b[0:8], r.Bytes)
	binary.BigEndian.PutUint64(b[8:16], uint64(r.Elapsed))
	binary.BigEndian.PutUint64(b[16:24], uint64(r.CPU))
	return b
}

func decodeResult(b []byte) (result, error) {
	if len(b) != resultLen {
		return result{}, fmt.Errorf("result: %d bytes, want %d", len(b), resultLen)
	}
	r := result{
		Bytes:   binary.BigEndian.Uint64(b[0:8]),
		Elapsed: time.Duration(binary.BigEndian.Uint64(b[8:16])),
		CPU:     time.Duration(binary.BigEndian.Uint64(b[16:24])),
	}
	if r.Elapsed < 0 || r.CPU < 0 {
		return result{}, errors.New("result: negative duration")
	}
	return r, nil
}

// cpuTime is this process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// runServer serves until ctx ends (SIGINT/SIGTERM from the command line).
func runServer(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "address to listen on (host:port)")
	certF := fs.String("cert", "", "server certificate (PEM)")
	keyF := fs.String("key", "", "server key (PEM)")
	caF := fs.String("ca", "", "optional: require client certificates from this CA")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *listen == "" || *certF == "" || *keyF == "" {
		return errors.New("--listen, --cert and --key are required")
	}
	cert, err := tls.LoadX509KeyPair(*certF, *keyF)
	if err != nil {
		return fmt.Errorf("load %s/%s: %w", *certF, *keyF, err)
	}
	cfg := baseTLS()
	cfg.Certificates = []tls.Certificate{cert}
	if *caF != "" {
		pool, err := loadPool(*caF)
		if err != nil {
			return err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-ctx.Done():
		case <-stopped:
		}
		ln.Close()
	}()
	fmt.Fprintf(stderr, "tlsbench server listening on %s\n", ln.Addr())
	// One connection at a time: the benchmark runs one transfer at a time,
	// and per-connection CPU accounting relies on it.
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		if err := serveConn(tls.Server(c, cfg)); err != nil {
			fmt.Fprintf(stderr, "tlsbench server: %s: %v\n", c.RemoteAddr(), err)
		}
	}
}

func serveConn(tc *tls.Conn) error {
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	hdr := make([]byte, requestLen)
	if _, err := io.ReadFull(tc, hdr); err != nil {
		return fmt.Errorf("read request: %w", err)
	}
	req, err := decodeRequest(hdr)
	if err != nil {
		return err
	}
	_ = tc.SetDeadline(time.Now().Add(time.Duration(req.Seconds*float64(time.Second)) + 30*time.Second))
	cpu0 := cpuTime()
	if req.Echo {
		return echo(tc)
	}
	if req.Reverse {
		_, err := send(tc, req.WriteSize, time.Duration(req.Seconds*float64(time.Second)))
		if err != nil {
			return err
		}
		return tc.CloseWrite()
	}
	n, elapsed, err := receive(tc)
	if err != nil {
		return err
	}
	res := result{Bytes: n, Elapsed: elapsed, CPU: cpuTime() - cpu0}
	if _, err := tc.Write(res.encode()); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return tc.CloseWrite()
}

// echo writes back everything it reads until EOF.
func echo(tc *tls.Conn) error {
	buf := make([]byte, 64<<10)
	for {
		n, err := tc.Read(buf)
		if n > 0 {
			if _, werr := tc.Write(buf[:n]); werr != nil {
				return fmt.Errorf("echo: %w", werr)
			}
		}
		if errors.Is(err, io.EOF) {
			return tc.CloseWrite()
		}
		if err != nil {
			return fmt.Errorf("echo: %w", err)
		}
	}
}

// echoRTT sends count messages of size bytes, interval apart, and returns
// the mean and largest round trip.
func echoRTT(c io.ReadWriter, size, count int, interval time.Duration) (avg, maxRTT time.Duration, err error) {
	out := make([]byte, size)
	in := make([]byte, size)
	var sum time.Duration
	for i := 0; i < count; i++ {
		if i > 0 {
			time.Sleep(interval)
		}
		out[0] = byte(i)
		start := time.Now()
		if _, err := c.Write(out); err != nil {
			return 0, 0, fmt.Errorf("echo %d: %w", i, err)
		}
		if _, err := io.ReadFull(c, in); err != nil {
			return 0, 0, fmt.Errorf("echo %d: %w", i, err)
		}
		rtt := time.Since(start)
		if in[0] != out[0] {
			return 0, 0, fmt.Errorf("echo %d: answer out of order", i)
		}
		sum += rtt
		maxRTT = max(maxRTT, rtt)
	}
	return sum / time.Duration(count), maxRTT, nil
}

// send writes writeSize-byte chunks for d and returns the bytes written.
func send(w io.Writer, writeSize int, d time.Duration) (uint64, error) {
	buf := make([]byte, writeSize)
	for i := range buf {
		buf[i] = byte(i)
	}
	var n uint64
	deadline := time.Now().Add(d)
	for i := 0; ; i++ {
		// Check the clock every few writes, not every write.
		if i%16 == 0 && !time.Now().Before(deadline) {
			return n, nil
		}
		m, err := w.Write(buf)
		n += uint64(m)
		if err != nil {
			return n, fmt.Errorf("write after %d bytes: %w", n, err)
		}
	}
}

// receive reads until EOF and returns the bytes read and the time from the
// first byte to EOF.
func receive(r io.Reader) (uint64, time.Duration, error) {
	buf := make([]byte, 256<<10)
	var n uint64
	var start time.Time
	for {
		m, err := r.Read(buf)
		if m > 0 && n == 0 {
			start = time.Now()
		}
		n += uint64(m)
		if errors.Is(err, io.EOF) {
			if n == 0 {
				return 0, 0, errors.New("no data received")
			}
			return n, time.Since(start), nil
		}
		if err != nil {
			return n, 0, fmt.Errorf("read after %d bytes: %w", n, err)
		}
	}
}

func runClient(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	connect := fs.String("connect", "", "server address (host:port)")
	caF := fs.String("ca", "", "CA that issued the server certificate")
	serverName := fs.String("server-name", "", "name the server certificate must carry (default: host of --connect)")
	certF := fs.String("cert", "", "optional client certificate")
	keyF := fs.String("key", "", "optional client key")
	writeSize := fs.Int("write-size", 65536, "bytes per TLS write")
	seconds := fs.Float64("seconds", 8, "transfer duration")
	reverse := fs.Bool("reverse", false, "server sends, client receives")
	echoN := fs.Int("echo", 0, "measure N round trips of --write-size bytes, 50 ms apart, instead of throughput")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *echoN < 0 || *echoN > maxEcho {
		return fmt.Errorf("--echo %d out of range 0..%d", *echoN, maxEcho)
	}
	if *echoN > 0 && *reverse {
		return errors.New("--echo and --reverse exclude each other")
	}
	if *connect == "" || *caF == "" {
		return errors.New("--connect and --ca are required")
	}
	if *writeSize < 1 || *writeSize > maxWriteSize {
		return fmt.Errorf("--write-size %d out of range 1..%d", *writeSize, maxWriteSize)
	}
	if *seconds <= 0 || *seconds > maxSeconds {
		return fmt.Errorf("--seconds %v out of range (0, %d]", *seconds, maxSeconds)
	}
	pool, err := loadPool(*caF)
	if err != nil {
		return err
	}
	cfg := baseTLS()
	cfg.RootCAs = pool
	cfg.ServerName = *serverName
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(*connect)
		if err != nil {
			return fmt.Errorf("--connect %q: %w", *connect, err)
		}
		cfg.ServerName = host
	}
	if *certF != "" || *keyF != "" {
		cert, err := tls.LoadX509KeyPair(*certF, *keyF)
		if err != nil {
			return fmt.Errorf("load %s/%s: %w", *certF, *keyF, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	tc, err := tls.DialWithDialer(&d, "tcp", *connect, cfg)
	if err != nil {
		return fmt.Errorf("dial %s: %w", *connect, err)
	}
	defer tc.Close()
	dur := time.Duration(*seconds * float64(time.Second))
	_ = tc.SetDeadline(time.Now().Add(dur + 30*time.Second))
	req := request{Reverse: *reverse, Echo: *echoN > 0, WriteSize: *writeSize, Seconds: *seconds}
	if req.Echo {
		// The server's deadline follows Seconds: cover the round trips.
		req.Seconds = (time.Duration(*echoN+3)*echoInterval + time.Second).Seconds()
		dur = time.Duration(req.Seconds * float64(time.Second))
		_ = tc.SetDeadline(time.Now().Add(dur + 30*time.Second))
	}
	if _, err := tc.Write(req.encode()); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	if req.Echo {
		// Three round trips warm up (like the ping warm-up in bench.sh).
		if _, _, err := echoRTT(tc, *writeSize, 3, echoInterval); err != nil {
			return err
		}
		avg, maxRTT, err := echoRTT(tc, *writeSize, *echoN, echoInterval)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "tlsbench dir=echo write_size=%d count=%d rtt_avg_ms=%.3f rtt_max_ms=%.3f cipher=%s\n",
			*writeSize, *echoN, avg.Seconds()*1000, maxRTT.Seconds()*1000, tls.CipherSuiteName(tc.ConnectionState().CipherSuite))
		return tc.CloseWrite()
	}
	cpu0 := cpuTime()
	var res result
	dir := "up"
	if *reverse {
		dir = "down"
		n, elapsed, err := receive(tc)
		if err != nil {
			return err
		}
		// The server's CPU is not reported in this direction.
		res = result{Bytes: n, Elapsed: elapsed, CPU: -1}
	} else {
		if _, err := send(tc, *writeSize, dur); err != nil {
			return err
		}
		if err := tc.CloseWrite(); err != nil {
			return fmt.Errorf("close write: %w", err)
		}
		b := make([]byte, resultLen)
		if _, err := io.ReadFull(tc, b); err != nil {
			return fmt.Errorf("read result: %w", err)
		}
		if res, err = decodeResult(b); err != nil {
			return err
		}
	}
	cpu := cpuTime() - cpu0
	cpuField := "-"
	if res.CPU >= 0 {
		cpuField = fmt.Sprintf("%.2f", (cpu + res.CPU).Seconds())
	}
	fmt.Fprintf(stdout, "tlsbench dir=%s write_size=%d seconds=%.3f bytes=%d gbps=%.3f cpu_s=%s cipher=%s\n",
		dir, *writeSize, res.Elapsed.Seconds(), res.Bytes, gbps(res.Bytes, res.Elapsed), cpuField,
		tls.CipherSuiteName(tc.ConnectionState().CipherSuite))
	return nil
}

// gbps is bytes over d in Gbit/s (0 for a zero duration).
func gbps(bytes uint64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) * 8 / d.Seconds() / 1e9
}

// formatFloat prints f with 3 decimals (helper for iperf-json output).
func formatFloat(f float64) string { return strconv.FormatFloat(f, 'f', 3, 64) }
