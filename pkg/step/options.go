package step

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/blobref/blobref/pkg/events"
)

// Options tune a Runner. A zero field takes its default, which
// DefaultOptions holds (in brackets); package stepservice reads the same
// defaults from the environment (CONSUMER_*).
type Options struct {
	Concurrency   int           // side effects run at once [8]
	BatchSize     int           // most messages handled as one batch [64]
	BatchWait     time.Duration // longest wait for a batch to fill after its first message [2ms]
	StragglerWait time.Duration // longest wait of a batch's finished side effects for its slower ones [1s]
	MaxInFlight   int           // messages fetched and not yet settled [4 × BatchSize]
	AckWait       time.Duration // consumer AckWait [30s]; heartbeats every third of it
	MaxDeliveries int           // deliveries before a message is dead-lettered [20]
	StepTimeout   time.Duration // deadline of one side effect [5m]
	BackoffBase   time.Duration // first retry delay, doubled each delivery [1s]
	BackoffMax    time.Duration // longest retry delay [5m]
	FetchWait     time.Duration // how long one pull waits for messages [2s]
	ShutdownGrace time.Duration // how long in-flight side effects may finish after shutdown starts [20s]
	// ProbeInterval is the first wait before a dependency that is down is
	// probed, doubled after each failed probe up to ProbeMaxInterval [250ms, 5s].
	ProbeInterval    time.Duration
	ProbeMaxInterval time.Duration
	ProbeTimeout     time.Duration // deadline of one probe [2s]
	MaxInlineSize    int           // largest inline data accepted [events.DefaultMaxInlineSize]
	// LookUpConsumer makes the runner look its durable consumer up, and wait
	// until it exists with DurableConfig's settings, instead of creating or
	// updating it: an operator step (blobrefctl setup) creates it, and the
	// service's NATS user needs no right to.
	LookUpConsumer bool
	Logger         *slog.Logger // [slog.Default()]
	// TracerProvider, if set, traces each batch and message (see
	// docs/tracing.md); nil is tracing off, which costs nothing.
	TracerProvider trace.TracerProvider
	Metrics        *Metrics // [none]
	// OnOutcome, if set, is called with the outcome of every message once it
	// is settled (tests observe the runner with it).
	OnOutcome func(Outcome)
}

// DefaultOptions returns the options a Runner uses for the fields left
// zero: the one set of defaults of the runtime and of the environment it
// is configured from.
func DefaultOptions() Options {
	const batch = 64
	return Options{
		Concurrency:      8,
		BatchSize:        batch,
		BatchWait:        2 * time.Millisecond,
		StragglerWait:    time.Second,
		MaxInFlight:      4 * batch,
		AckWait:          30 * time.Second,
		MaxDeliveries:    20,
		StepTimeout:      5 * time.Minute,
		BackoffBase:      time.Second,
		BackoffMax:       5 * time.Minute,
		FetchWait:        2 * time.Second,
		ShutdownGrace:    20 * time.Second,
		ProbeInterval:    250 * time.Millisecond,
		ProbeMaxInterval: 5 * time.Second,
		ProbeTimeout:     2 * time.Second,
		MaxInlineSize:    events.DefaultMaxInlineSize,
	}
}

func (o *Options) setDefaults() {
	d := DefaultOptions()
	def := func(v *time.Duration, dv time.Duration) {
		if *v <= 0 {
			*v = dv
		}
	}
	defInt := func(n *int, dv int) {
		if *n <= 0 {
			*n = dv
		}
	}
	defInt(&o.Concurrency, d.Concurrency)
	defInt(&o.BatchSize, d.BatchSize)
	defInt(&o.MaxInFlight, 4*o.BatchSize)
	defInt(&o.MaxDeliveries, d.MaxDeliveries)
	defInt(&o.MaxInlineSize, d.MaxInlineSize)
	def(&o.BatchWait, d.BatchWait)
	def(&o.StragglerWait, d.StragglerWait)
	def(&o.AckWait, d.AckWait)
	def(&o.StepTimeout, d.StepTimeout)
	def(&o.BackoffBase, d.BackoffBase)
	def(&o.BackoffMax, d.BackoffMax)
	def(&o.FetchWait, d.FetchWait)
	def(&o.ShutdownGrace, d.ShutdownGrace)
	def(&o.ProbeInterval, d.ProbeInterval)
	def(&o.ProbeMaxInterval, d.ProbeMaxInterval)
	def(&o.ProbeTimeout, d.ProbeTimeout)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// MaxBatches is how many batches run at once: as many as full batches fit
// in the window, at least two (one is fetched and settled while another
// runs) and at most sixteen. Each holds one Postgres connection while it
// runs.
func (o Options) MaxBatches() int {
	o.setDefaults()
	return min(16, max(2, (o.MaxInFlight+o.BatchSize-1)/o.BatchSize))
}

// settleTimeout bounds each of recording, publishing and acking.
const settleTimeout = 10 * time.Second

// DurableConfig is the durable consumer spec that runners with options o
// read; blobrefctl setup creates the pipeline's with it. Deliveries are
// unlimited on the server: the runner itself dead-letters a message after
// MaxDeliveries, so nothing is dropped silently, not even a message that
// crashes its worker every time.
func DurableConfig(spec events.ConsumerSpec, o Options) jetstream.ConsumerConfig {
	o.setDefaults()
	return jetstream.ConsumerConfig{
		Durable:       spec.Durable,
		Description:   "blobref step consumer " + spec.Durable,
		FilterSubject: spec.FilterSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.AckWait,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: max(1000, 4*o.MaxInFlight),
	}
}

// durableSummary is what a runner needs of its durable consumer's settings.
func durableSummary(c jetstream.ConsumerConfig) string {
	return fmt.Sprintf("filter %s, ack %s, ack wait %s, max deliver %d, max ack pending %d",
		c.FilterSubject, c.AckPolicy, c.AckWait, c.MaxDeliver, c.MaxAckPending)
}
