package uploads

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/blobref/blobref/internal/claimcheck"
)

// Metrics counts what the operation does beyond HTTP requests.
type Metrics struct {
	publishes   *prometheus.CounterVec
	stagings    *prometheus.CounterVec
	stagedBytes prometheus.Counter
	stageRetry  prometheus.Counter
	batches     prometheus.Histogram
}

// NewMetrics registers the operation's metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		publishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blobref_ingest_publishes_total",
			Help: "Request events JetStream acknowledged, by kind: first (a new upload) or redrive (a retry re-published it).",
		}, []string{"kind"}),
		stagings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blobref_ingest_staged_total",
			Help: "Bodies claim-checked in the staging bucket, by outcome: staged, resumed (an earlier attempt had staged a verified part, the rest was staged) or reused (an unrecorded earlier attempt had staged the same bytes).",
		}, []string{"outcome"}),
		stagedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blobref_ingest_staged_bytes_total",
			Help: "Bytes written to the staging bucket.",
		}),
		stageRetry: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "blobref_ingest_staging_retries_total",
			Help: "Chunks JetStream refused for the moment (too many requests, unavailable, a timeout) and staging sent again.",
		}),
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "blobref_ingest_batch_size",
			Help:    "Requests recorded and published together: one Postgres round trip records a batch, another its publishes.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128},
		}),
	}
	for _, c := range []prometheus.Collector{m.publishes, m.stagings, m.stagedBytes, m.stageRetry, m.batches} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.publishes.WithLabelValues("first")
	m.publishes.WithLabelValues("redrive")
	m.stagings.WithLabelValues("staged")
	m.stagings.WithLabelValues("resumed")
	m.stagings.WithLabelValues("reused")
	return m, nil
}

func (m *Metrics) published(redrive bool) {
	if m == nil {
		return
	}
	kind := "first"
	if redrive {
		kind = "redrive"
	}
	m.publishes.WithLabelValues(kind).Inc()
}

func (m *Metrics) staged(st claimcheck.Staged) {
	if m == nil {
		return
	}
	outcome := "staged"
	switch {
	case st.Reused:
		outcome = "reused"
	case st.Resumed > 0:
		outcome = "resumed"
	}
	m.stagings.WithLabelValues(outcome).Inc()
}

// wroteStaged counts n bytes written to the staging bucket.
func (m *Metrics) wroteStaged(n int) {
	if m != nil {
		m.stagedBytes.Add(float64(n))
	}
}

func (m *Metrics) retriedStaging() {
	if m != nil {
		m.stageRetry.Inc()
	}
}

func (m *Metrics) batch(n int) {
	if m == nil {
		return
	}
	m.batches.Observe(float64(n))
}
