package stepservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check reports whether a dependency is usable.
type Check func(ctx context.Context) error

// NATSCheck is ready while nc is connected.
func NATSCheck(nc *nats.Conn) Check {
	return func(context.Context) error {
		if s := nc.Status(); s != nats.CONNECTED {
			return fmt.Errorf("nats is %s", s)
		}
		return nil
	}
}

// PostgresCheck is ready while pool answers a ping.
func PostgresCheck(pool *pgxpool.Pool) Check {
	return func(ctx context.Context) error { return pool.Ping(ctx) }
}

// NewRegistry returns a Prometheus registry with the Go and process
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Ops serves /metrics, /healthz (the process runs) and /readyz (every
// check passes).
type Ops struct {
	Addr     string
	Registry *prometheus.Registry
	Checks   map[string]Check
	// Ready, if set, is closed when the service has started (streams and
	// schema set up); /readyz fails before.
	Ready <-chan struct{}
	// Pprof serves the runtime profiles under /debug/pprof/ too.
	Pprof bool
	// Down, if set, names the dependencies the service found down and has
	// not seen back (a step runner's circuit breaker): /readyz fails, with
	// each named "down", while there are any.
	Down func() []string
}

// Handler returns the ops HTTP handler.
func (o *Ops) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{}))
	if o.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeStatus(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		status, code := map[string]string{}, http.StatusOK
		if o.Ready != nil {
			select {
			case <-o.Ready:
			default:
				status["startup"], code = "starting", http.StatusServiceUnavailable
			}
		}
		for name, check := range o.Checks {
			if err := check(ctx); err != nil {
				status[name], code = "unavailable", http.StatusServiceUnavailable
				continue
			}
			status[name] = "ok"
		}
		if o.Down != nil {
			for _, name := range o.Down() {
				status[name], code = "down", http.StatusServiceUnavailable
			}
		}
		writeStatus(w, code, status)
	})
	return mux
}

func writeStatus(w http.ResponseWriter, code int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}

// Run serves until ctx is done, then shuts the server down. The requests
// still in flight then see their contexts done: a CPU profile or trace
// being taken (PPROF_ENABLED) ends early with what it has, rather than
// holding the service's exit past the shutdown's grace.
func (o *Ops) Run(ctx context.Context) error {
	if o.Addr == "" {
		<-ctx.Done()
		return nil
	}
	ln, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return fmt.Errorf("ops: %w", err)
	}
	base, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	srv := &http.Server{
		Handler: o.Handler(), ReadHeaderTimeout: 5 * time.Second,
		BaseContext: func(net.Listener) context.Context { return base },
	}
	if err := ServeUntil(ctx, srv, ln, 5*time.Second, stop); err != nil {
		return fmt.Errorf("ops: %w", err)
	}
	return nil
}

// ServeUntil serves srv on ln until ctx is done, then shuts it down
// gracefully: it stops accepting connections, calls stopping (if not nil:
// to end the waits of long requests), lets the requests in flight finish
// within timeout, and then closes the connections left.
func ServeUntil(ctx context.Context, srv *http.Server, ln net.Listener, timeout time.Duration, stopping func()) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	if stopping != nil {
		stopping()
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		_ = srv.Close()
		err = fmt.Errorf("shutdown: %w", err)
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
