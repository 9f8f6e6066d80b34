package steprun

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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

// Handler handles one message and settles it.
type Handler func(ctx context.Context, msg jetstream.Msg) Outcome

// Middleware wraps a Handler with a cross-cutting concern.
type Middleware func(Handler) Handler

// logOutcome logs each message once, with the upload id, step and delivery
// count.
func logOutcome(log *slog.Logger, step string) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, msg jetstream.Msg) Outcome {
			out := next(ctx, msg)
			attrs := []any{
				"step", step, "id", out.UploadID, "subject", out.Subject,
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
			default:
				log.Debug("handled", attrs...)
			}
			return out
		}
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
			Help:    "Time to handle one message, from receipt to settlement, by step and outcome.",
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

// Middleware counts and times each message of step.
func (m *Metrics) Middleware(step string) Middleware {
	for _, k := range []Kind{Done, Skipped, Retried, Dead} {
		m.messages.WithLabelValues(step, k.String()) // expose zeros
	}
	m.effects.WithLabelValues(step)
	inFlight := m.inFlight.WithLabelValues(step)
	return func(next Handler) Handler {
		return func(ctx context.Context, msg jetstream.Msg) Outcome {
			start := time.Now()
			inFlight.Inc()
			out := next(ctx, msg)
			inFlight.Dec()
			m.messages.WithLabelValues(step, out.Kind.String()).Inc()
			m.duration.WithLabelValues(step, out.Kind.String()).Observe(time.Since(start).Seconds())
			return out
		}
	}
}

// effectDone counts one side effect of step run to completion.
func (m *Metrics) effectDone(step string) {
	if m != nil {
		m.effects.WithLabelValues(step).Inc()
	}
}
