package api

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/blobref/blobref/pkg/step/stepservice"
)

// Serve serves a on ln until ctx is done, then shuts down gracefully: it
// stops accepting connections, ends the waits of Prefer: wait requests and
// lets in-flight requests finish within shutdownTimeout, after which it
// closes the connections that are left.
func Serve(ctx context.Context, ln net.Listener, a *API, shutdownTimeout time.Duration) error {
	readHeader := a.opts.ReadHeaderTimeout
	if readHeader <= 0 {
		readHeader = 10 * time.Second
	}
	srv := &http.Server{
		Handler: a,
		// No ReadTimeout or WriteTimeout: a large body may take long to
		// arrive (BodyTimeouts bound how slowly), and Prefer: wait holds the
		// answer back. Headers must come quickly.
		ReadHeaderTimeout: readHeader,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(a.opts.Logger.Handler(), slog.LevelWarn),
	}
	if err := stepservice.ServeUntil(ctx, srv, ln, shutdownTimeout, a.StopWaiting); err != nil {
		return fmt.Errorf("api: %w", err)
	}
	return nil
}

// Metrics counts the API's requests and the bytes uploaded.
type Metrics struct {
	requests *prometheus.CounterVec
	inFlight *prometheus.GaugeVec
	duration *prometheus.HistogramVec
	bytes    prometheus.Counter
}

// NewMetrics registers the API's metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blobref_ingest_requests_total",
			Help: "HTTP requests answered, by route and status code.",
		}, []string{"route", "code"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "blobref_ingest_requests_in_flight",
			Help: "HTTP requests being handled, by route: slow bodies and Prefer: wait among them.",
		}, []string{"route"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "blobref_ingest_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"route"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blobref_ingest_upload_bytes_total",
			Help: "Bytes of upload bodies received.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.inFlight, m.duration, m.bytes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// start counts a request of route in flight until the returned func runs.
func (m *Metrics) start(route string) func() {
	if m == nil {
		return func() {}
	}
	g := m.inFlight.WithLabelValues(route)
	g.Inc()
	return g.Dec
}

func (m *Metrics) observe(route string, code int, d time.Duration, bytes int64) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(route, fmt.Sprint(code)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
	m.bytes.Add(float64(bytes))
}
