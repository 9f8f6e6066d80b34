package step

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Kind is what became of a message.
type Kind int

const (
	// Retried: handed back with NakWithDelay after a transient failure.
	Retried Kind = iota
	// Done: the side effect ran and was recorded here; the next event was
	// published and the message acked.
	Done
	// Skipped: the step's marker existed; its recorded result was re-emitted
	// and the message acked.
	Skipped
	// Dead: dead-lettered with a reason and terminated.
	Dead
)

func (k Kind) String() string {
	switch k {
	case Done:
		return "done"
	case Skipped:
		return "skipped"
	case Dead:
		return "dead"
	default:
		return "retried"
	}
}

// Reasons of retries that are not failures of the message.
const (
	// reasonBusy: another worker holds the step's claim.
	reasonBusy = "busy"
	// reasonOutage: a dependency was down; the delivery is excused.
	reasonOutage = "outage"
	// reasonShutdown: handed back unprocessed as the runner stopped.
	reasonShutdown = "shutdown"
)

// Outcome reports how one message was handled.
type Outcome struct {
	Kind       Kind
	Reason     string        // dead-letter reason, or why it was retried
	Err        error         // the failure, if any
	Delay      time.Duration // redelivery delay of a retry
	UploadID   string        // empty when the event could not be decoded
	Subject    string
	Deliveries uint64
	Stream     string // the stream of the message
	Sequence   uint64 // stream sequence of the message
	// Outage names the dependency that was down when the message failed:
	// the delivery was excused and does not count toward MaxDeliveries.
	Outage string
	// Excused is how many earlier deliveries an outage excused, when the
	// message reached its delivery limit.
	Excused uint64

	excusedKnown bool // Excused was read for this delivery
}

// fail records err as the outcome: permanent errors dead-letter the message,
// all others retry it.
func (o Outcome) fail(err error) Outcome {
	o.Err = err
	if reason, ok := deadReason(err); ok {
		o.Kind, o.Reason = Dead, reason
	} else {
		o.Kind, o.Reason = Retried, "error"
	}
	return o
}

// observe reports a settled message: metrics, one log line with the upload
// id, step and delivery count, and the OnOutcome hook.
func (r *Runner[R]) observe(out Outcome, start time.Time) {
	r.opts.Metrics.settled(r.step.Name, out, time.Since(start))
	log := r.opts.Logger
	attrs := []any{
		"step", r.step.Name, "id", out.UploadID, "subject", out.Subject,
		"deliveries", out.Deliveries, "seq", out.Sequence, "outcome", out.Kind.String(),
	}
	if out.Reason != "" {
		attrs = append(attrs, "reason", out.Reason)
	}
	if out.Outage != "" {
		attrs = append(attrs, "dependency", out.Outage)
	}
	if out.Err != nil {
		attrs = append(attrs, "error", out.Err.Error())
	}
	switch {
	case out.Kind == Dead:
		log.Error("dead-lettered", attrs...)
	case out.Kind == Retried && out.Reason == reasonBusy:
		log.Debug("claimed elsewhere, retrying later", append(attrs, "delay", out.Delay)...)
	case out.Kind == Retried && out.Outage != "":
		// The breaker logs the outage once; each message only at debug.
		log.Debug("dependency down, retrying later", append(attrs, "delay", out.Delay)...)
	case out.Kind == Retried && out.Reason == reasonShutdown:
		log.Debug("handed back at shutdown", attrs...)
	case out.Kind == Retried:
		log.Warn("retrying", append(attrs, "delay", out.Delay)...)
	case out.Err != nil:
		log.Warn("handled, ack failed", attrs...)
	case log.Enabled(context.Background(), slog.LevelDebug):
		log.Debug("handled", attrs...)
	}
	if r.opts.OnOutcome != nil {
		r.opts.OnOutcome(out)
	}
}

// Metrics are the runner's Prometheus metrics.
type Metrics struct {
	messages *prometheus.CounterVec
	effects  *prometheus.CounterVec
	duration *prometheus.HistogramVec
	batches  *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
	up       *prometheus.GaugeVec
	outages  *prometheus.CounterVec
	excuses  *prometheus.CounterVec
}

// NewMetrics registers the runner's metrics with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blobref_step_messages_total",
			Help: "Messages handled, by step and outcome (done, skipped, retried, dead).",
		}, []string{"step", "outcome"}),
		effects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blobref_step_effects_total",
			Help: "Side effects run to completion by this process, by step (recorded or not; a ReadOnly step's once recorded).",
		}, []string{"step"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "blobref_step_duration_seconds",
			Help:    "Time to handle one message, from the start of its batch to settlement, by step and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}, []string{"step", "outcome"}),
		batches: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "blobref_step_batch_messages",
			Help:    "Messages in each batch handed to a worker, by step: each batch costs its round trips however small it is.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9),
		}, []string{"step"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "blobref_step_in_flight",
			Help: "Messages fetched and not yet settled, by step: those in a batch, whether it runs or waits for a worker.",
		}, []string{"step"}),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "blobref_dependency_up",
			Help: "1 while the step's runner uses the dependency, 0 while it is down (the runner fetches nothing) or on trial after it answered its probe.",
		}, []string{"step", "dependency"}),
		outages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blobref_dependency_outages_total",
			Help: "Times the step's runner found the dependency down.",
		}, []string{"step", "dependency"}),
		excuses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "blobref_step_excused_deliveries_total",
			Help: "Deliveries that failed while a dependency was down, by step: they do not count toward CONSUMER_MAX_DELIVERIES.",
		}, []string{"step"}),
	}
	for _, c := range []prometheus.Collector{m.messages, m.effects, m.duration, m.batches, m.inFlight, m.up, m.outages, m.excuses} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return nil, err
			}
		}
	}
	return m, nil
}

// expose creates the series of step, so that they read zero before the
// first message.
func (m *Metrics) expose(step string) {
	if m == nil {
		return
	}
	for _, k := range []Kind{Done, Skipped, Retried, Dead} {
		m.messages.WithLabelValues(step, k.String())
	}
	m.effects.WithLabelValues(step)
	m.batches.WithLabelValues(step)
	m.inFlight.WithLabelValues(step)
	m.excuses.WithLabelValues(step)
}

// dependencyUp sets whether dep of step is up.
func (m *Metrics) dependencyUp(step, dep string, up bool) {
	if m == nil {
		return
	}
	v := 0.0
	if up {
		v = 1
	}
	m.up.WithLabelValues(step, dep).Set(v)
	m.outages.WithLabelValues(step, dep)
}

// outage counts dep of step going down.
func (m *Metrics) outage(step, dep string) {
	if m != nil {
		m.outages.WithLabelValues(step, dep).Inc()
	}
}

// excused counts one excused delivery of step.
func (m *Metrics) excused(step string) {
	if m != nil {
		m.excuses.WithLabelValues(step).Inc()
	}
}

// batch observes a batch of n messages of step handed to a worker.
func (m *Metrics) batch(step string, n int) {
	if m != nil {
		m.batches.WithLabelValues(step).Observe(float64(n))
	}
}

// inFlightAdd moves the in-flight gauge of step by n.
func (m *Metrics) inFlightAdd(step string, n int) {
	if m != nil {
		m.inFlight.WithLabelValues(step).Add(float64(n))
	}
}

// settled counts and times one settled message of step.
func (m *Metrics) settled(step string, out Outcome, took time.Duration) {
	if m == nil {
		return
	}
	m.inFlight.WithLabelValues(step).Dec()
	m.messages.WithLabelValues(step, out.Kind.String()).Inc()
	m.duration.WithLabelValues(step, out.Kind.String()).Observe(took.Seconds())
}

// effectDone counts one side effect of step run to completion.
func (m *Metrics) effectDone(step string) {
	if m != nil {
		m.effects.WithLabelValues(step).Inc()
	}
}
