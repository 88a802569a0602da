// Package metricsrv is the Prometheus HTTP listener both the gateway and the
// laptop run ([metrics] listen): GET /metrics serves a registry, anything
// else is a 404, with timeouts on every phase of a request so a slow
// scraper cannot hold connections open. What is measured stays with each
// side (server/metrics, client/metrics.go); only the serving is shared.
package metricsrv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var errNotMetricsURL = errors.New("only /metrics is served here")

// Handler serves reg at /metrics and 404 elsewhere; scrape errors are
// logged to log (may be nil).
func Handler(reg *prometheus.Registry, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogErrorLog{log}, ErrorHandling: promhttp.ContinueOnError}))
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, errNotMetricsURL.Error(), http.StatusNotFound)
	})
	return mux
}

type slogErrorLog struct{ log *slog.Logger }

func (l slogErrorLog) Println(v ...any) {
	if l.log != nil {
		l.log.Warn("metrics: " + fmt.Sprint(v...))
	}
}

// Server is a metrics HTTP listener.
type Server struct {
	hs   *http.Server
	ln   net.Listener
	done chan struct{}
}

// Listen binds addr and serves reg at /metrics until Close.
func Listen(addr string, reg *prometheus.Registry, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	s := &Server{
		ln:   ln,
		done: make(chan struct{}),
		hs: &http.Server{
			Handler:           Handler(reg, log),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       time.Minute,
			MaxHeaderBytes:    8 << 10,
		},
	}
	go func() {
		defer close(s.done)
		if err := s.hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && log != nil {
			log.Error("metrics listener stopped", "listen", addr, "err", err)
		}
	}()
	return s, nil
}

// Wildcard reports whether the listen address addr (host:port) binds every
// address of the machine: an empty host, 0.0.0.0 or ::. Both ends warn
// about it: metrics are plain HTTP without authentication.
func Wildcard(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// Addr is the address the listener is bound to.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the listener, waiting up to two seconds for scrapes in
// flight, and returns when its goroutine has ended.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.hs.Shutdown(ctx)
	if err != nil {
		err = s.hs.Close()
	}
	<-s.done
	return err
}
