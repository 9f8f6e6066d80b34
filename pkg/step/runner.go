package step

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step/failpoint"
	"github.com/blobref/blobref/pkg/step/internal/marker"
)

// Runner runs a Step over its durable consumer.
type Runner[R any] struct {
	step    Step[R]
	spec    events.ConsumerSpec
	js      jetstream.JetStream
	markers *marker.Store
	opts    Options
	// horizon is the retention horizon (a time.Duration; 0: none) read
	// from the stream: older events are refused as expired.
	horizon atomic.Int64
	effects chan struct{} // one token per side effect running
	workers *workers      // the goroutines batches and side effects run on
	batches chan struct{} // one token per batch running
	ended   chan struct{} // signalled when a batch ends (fetch waits for it)
	breaker *breaker
	excuses *excuses
	tracing *tracing // nil: off
	// repeats says a ReadOnly step has lately met events whose step was
	// done (a replay, a republish): it looks markers up before the side
	// effects again, until a look-up finds none (see claim).
	repeats atomic.Bool
}

// NewRunner returns a Runner of step over JetStream js, keeping the step's
// markers in Postgres pool, whose schema holds the step tables (Migrate). It
// checks the step and fills in the defaults of opts.
func NewRunner[R any](js jetstream.JetStream, pool *pgxpool.Pool, step Step[R], opts Options) (*Runner[R], error) {
	switch {
	case step.Name == "" || step.Effect == nil:
		return nil, errors.New("step: a step needs a Name and an Effect")
	case js == nil || pool == nil:
		return nil, fmt.Errorf("step: step %s needs JetStream and a Postgres pool", step.Name)
	case step.QueueInTx != nil && step.InTx == nil:
		return nil, fmt.Errorf("step: step %s has QueueInTx without InTx, which it falls back to", step.Name)
	}
	spec, err := step.Consumer()
	if err != nil {
		return nil, err
	}
	opts.setDefaults()
	opts.Metrics.expose(step.Name)
	markers := marker.NewStore(pool)
	r := &Runner[R]{
		step: step, spec: spec, js: js, markers: markers, opts: opts,
		effects: make(chan struct{}, opts.Concurrency),
		workers: newWorkers(),
		batches: make(chan struct{}, opts.MaxBatches()),
		ended:   make(chan struct{}, 1),
		excuses: newExcuses(step.Name, markers, opts),
		tracing: newTracing(opts.TracerProvider, step.Name),
	}
	probes := map[string]Probe{
		DependencyPostgres: markers.Ping,
		// JetStream answers when it hands over the runner's consumer: its
		// info when an operator step creates it (LookUpConsumer: the one API
		// request a consumer's NATS user may make besides pulls, see
		// deploy/nats/nats.conf), otherwise its (re)creation, which also
		// brings the consumer back should a restart have lost it.
		DependencyJetStream: func(ctx context.Context) error {
			if opts.LookUpConsumer {
				_, err := js.Consumer(ctx, events.StreamName, spec.Durable)
				return err
			}
			_, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, r.ConsumerConfig())
			return err
		},
	}
	for name, p := range step.Probes {
		probes[name] = p
	}
	r.breaker = newBreaker(step.Name, probes, opts)
	return r, nil
}

// Unavailable returns the dependencies the runner found down and has not
// seen back yet, sorted; none while all are up.
func (r *Runner[R]) Unavailable() []string { return r.breaker.unavailable() }

// ConsumerConfig is the durable consumer the runner creates or updates:
// DurableConfig of its step's consumer and its options.
func (r *Runner[R]) ConsumerConfig() jetstream.ConsumerConfig {
	return DurableConfig(r.spec, r.opts)
}

// Run consumes until ctx is done, then stops fetching, lets in-flight
// messages finish (or hands them back after ShutdownGrace) and returns.
func (r *Runner[R]) Run(ctx context.Context) error {
	cons, err := r.consumer(ctx)
	if err != nil && ctx.Err() != nil {
		return nil // shut down before starting
	}
	if err != nil {
		return fmt.Errorf("step: %s: consumer: %w", r.step.Name, err)
	}
	if err := r.loadHorizon(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("step: %s: retention horizon: %w", r.step.Name, err)
	}

	// The step's own dependencies are not touched until a message needs
	// them: probe them now, so that one missing from the start is an outage
	// from the start.
	r.breaker.check(ctx, r.step.Probes)

	// work outlives ctx by ShutdownGrace so that in-flight side effects can
	// finish; recording and acking do not depend on it at all.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopGrace := context.AfterFunc(ctx, func() {
		t := time.NewTimer(r.opts.ShutdownGrace)
		defer t.Stop()
		select {
		case <-t.C:
			cancelWork()
		case <-work.Done():
		}
	})
	defer stopGrace()

	// The breaker's prober and the excuses' writer outlive the batches,
	// which report to them until the last one is settled.
	helpers, stopHelpers := context.WithCancel(context.WithoutCancel(ctx))
	var hwg sync.WaitGroup
	hwg.Add(3)
	go func() { defer hwg.Done(); r.breaker.run(helpers) }()
	go func() { defer hwg.Done(); r.refreshHorizon(helpers) }()
	go func() {
		defer hwg.Done()
		r.excuses.run(helpers, func() bool { return !r.breaker.isDown(DependencyPostgres) }, r.breaker.changed)
	}()
	defer func() { stopHelpers(); hwg.Wait() }()

	defer r.workers.stop()
	r.window(ctx, work, cons)
	return nil
}

// consumer creates or updates the durable consumer (with LookUpConsumer,
// looks it up, waiting until it exists as DurableConfig describes). A
// JetStream that does not answer in time or has no leader yet (a restart, an
// election) is waited for; an error JetStream answers with, or a permission
// it refuses, is returned: retrying cannot fix a wrong configuration.
func (r *Runner[R]) consumer(ctx context.Context) (jetstream.Consumer, error) {
	delay := 100 * time.Millisecond
	for {
		var cons jetstream.Consumer
		var err error
		if r.opts.LookUpConsumer {
			cons, err = r.js.Consumer(ctx, events.StreamName, r.spec.Durable)
			var problem string
			switch {
			case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
				problem = "not found"
			case err == nil && durableSummary(cons.CachedInfo().Config) != durableSummary(r.ConsumerConfig()):
				problem = "it has " + durableSummary(cons.CachedInfo().Config) + "; this runner wants " +
					durableSummary(r.ConsumerConfig()) + ": run blobrefctl setup with the same CONSUMER_* settings"
			}
			if problem != "" && ctx.Err() == nil {
				r.opts.Logger.Warn("waiting for the durable consumer, which blobrefctl setup creates", "step", r.step.Name,
					"consumer", r.spec.Durable, "problem", problem, "delay", delay)
				sleep(ctx, delay)
				delay = min(2*delay, 5*time.Second)
				continue
			}
		} else {
			cons, err = r.js.CreateOrUpdateConsumer(ctx, events.StreamName, r.ConsumerConfig())
		}
		var apiErr *jetstream.APIError
		switch {
		case err == nil:
			return cons, nil
		case ctx.Err() != nil, errors.Is(err, nats.ErrPermissionViolation),
			errors.As(err, &apiErr) && apiErr.Code != http.StatusServiceUnavailable:
			return nil, err
		}
		r.opts.Logger.Warn("consumer not created yet, retrying", "step", r.step.Name, "error", err, "delay", delay)
		sleep(ctx, delay)
		delay = min(2*delay, 5*time.Second)
	}
}

// The failpoints of a step, in the order a message meets them: each is
// named "<step>/<point>" (see package failpoint).
const (
	pointBeforeEffect  = "before-effect"
	pointAfterEffect   = "after-effect"
	pointBeforeMarker  = "before-marker"
	pointAfterMarker   = "after-marker"
	pointBeforePublish = "before-publish"
	pointAfterPublish  = "after-publish"
	pointBeforeAck     = "before-ack"
)

// Failpoints returns the names of the failpoints the runner of the step
// named step injects, in the order a message meets them, such as
// "blob/after-effect": crash tests arm them (BLOBREF_FAILPOINTS).
func Failpoints(step string) []string {
	points := []string{pointBeforeEffect, pointAfterEffect, pointBeforeMarker, pointAfterMarker,
		pointBeforePublish, pointAfterPublish, pointBeforeAck}
	for i, p := range points {
		points[i] = step + "/" + p
	}
	return points
}

// inject runs the failpoint point of the step (see package failpoint).
func (r *Runner[R]) inject(ctx context.Context, point string) error {
	return failpoint.Inject(ctx, r.step.Name+"/"+point)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
