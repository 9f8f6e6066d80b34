package steprun

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

// reasonBusy marks a retry because another worker holds the step's claim.
const reasonBusy = "busy"

// Outcome reports how one message was handled.
type Outcome struct {
	Kind       Kind
	Reason     string        // dead-letter reason, or why it was retried
	Err        error         // the failure, if any
	Delay      time.Duration // redelivery delay of a retry
	UploadID   string        // empty when the event could not be decoded
	Subject    string
	Deliveries uint64
	Sequence   uint64 // stream sequence of the message
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
	if out.Err != nil {
		attrs = append(attrs, "error", out.Err.Error())
	}
	switch {
	case out.Kind == Dead:
		log.Error("dead-lettered", attrs...)
	case out.Kind == Retried && out.Reason == reasonBusy:
		log.Debug("claimed elsewhere, retrying later", append(attrs, "delay", out.Delay)...)
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
	inFlight *prometheus.GaugeVec
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
			Help: "Side effects run to completion by this process, by step (recorded or not).",
		}, []string{"step"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "blobref_step_duration_seconds",
			Help:    "Time to handle one message, from the start of its batch to settlement, by step and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}, []string{"step", "outcome"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "blobref_step_in_flight",
			Help: "Messages being handled now, by step.",
		}, []string{"step"}),
	}
	for _, c := range []prometheus.Collector{m.messages, m.effects, m.duration, m.inFlight} {
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
	m.inFlight.WithLabelValues(step)
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
