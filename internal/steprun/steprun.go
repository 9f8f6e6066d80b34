// Package steprun is blobref's consumer runtime: it runs one side effect of
// the pipeline for each message of a durable JetStream pull consumer, so that
// a redelivered or republished event runs only the steps not yet finished.
//
// For every message the runner does, in order:
//
//	decode → check marker → run the side effect → record the marker
//	       → publish the next event (Nats-Msg-Id derived from the input) → ack
//
// The ack is sent only after JetStream acknowledged the publish. A step whose
// marker exists skips its side effect and re-emits its recorded result. A
// transient failure is handed back with NakWithDelay and a growing back-off;
// an invalid or conflicting event, or one that used up its deliveries, is
// published to the dead-letter stream with its reason and then terminated.
// Every decision between Ack, NakWithDelay and Term is made in one place,
// settle.
//
// Recording, publishing and acking run on contexts that shutdown cannot
// cancel, so SIGTERM never falls between a side effect and its marker.
package steprun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/failpoint"
	"github.com/blobref/blobref/internal/marker"
	"github.com/blobref/blobref/pkg/events"
)

// Effect is the side effect of a step: a plain function from the consumed
// event to the result that its marker records.
type Effect[R any] func(ctx context.Context, ev *events.Event) (R, error)

// Step describes one side effect of the pipeline and what follows it.
type Step[R any] struct {
	// Name identifies the step in markers, metrics, logs and failpoints.
	Name string
	// Consumer is the durable consumer the step reads.
	Consumer events.ConsumerSpec
	// Accepts is the event type the step consumes.
	Accepts string
	// Effect performs the side effect. It must be safe to run again after a
	// crash that left it done but unrecorded (deterministic keys, conditional
	// writes).
	Effect Effect[R]
	// InTx, if set, writes what must commit atomically with the marker. It
	// runs only when this worker's marker wins.
	InTx func(ctx context.Context, tx pgx.Tx, ev *events.Event, r R) error
	// Next builds the event to publish once the step is done, from the
	// consumed event and the recorded result.
	Next func(ev *events.Event, r R) (*events.Event, error)
}

// Options tune a Runner. Zero values take the defaults in brackets.
type Options struct {
	Concurrency   int           // messages processed at once [4]
	AckWait       time.Duration // consumer AckWait [30s]; heartbeats every third of it
	MaxDeliveries int           // deliveries before a message is dead-lettered [20]
	StepTimeout   time.Duration // deadline of one side effect [5m]
	BackoffBase   time.Duration // first retry delay, doubled each delivery [1s]
	BackoffMax    time.Duration // longest retry delay [5m]
	FetchWait     time.Duration // how long one pull waits for messages [2s]
	ShutdownGrace time.Duration // how long in-flight side effects may finish after shutdown starts [20s]
	MaxInlineSize int           // largest inline data accepted [events.DefaultMaxInlineSize]
	Middleware    []Middleware  // wrap the message handler, outermost first
	Logger        *slog.Logger  // [slog.Default()]
	Metrics       *Metrics      // [none]
}

func (o *Options) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.MaxDeliveries <= 0 {
		o.MaxDeliveries = 20
	}
	if o.MaxInlineSize <= 0 {
		o.MaxInlineSize = events.DefaultMaxInlineSize
	}
	def(&o.AckWait, 30*time.Second)
	def(&o.StepTimeout, 5*time.Minute)
	def(&o.BackoffBase, time.Second)
	def(&o.BackoffMax, 5*time.Minute)
	def(&o.FetchWait, 2*time.Second)
	def(&o.ShutdownGrace, 20*time.Second)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// settleTimeout bounds each of recording, publishing and acking.
const settleTimeout = 10 * time.Second

// Runner runs a Step over its durable consumer.
type Runner[R any] struct {
	step    Step[R]
	js      jetstream.JetStream
	markers *marker.Store
	opts    Options
	handler Handler
}

// New returns a Runner for step. It checks the step and fills in defaults.
func New[R any](js jetstream.JetStream, markers *marker.Store, step Step[R], opts Options) (*Runner[R], error) {
	switch {
	case step.Name == "" || step.Consumer.Durable == "" || step.Consumer.FilterSubject == "":
		return nil, errors.New("steprun: step needs a name and a consumer")
	case step.Accepts == "" || step.Effect == nil || step.Next == nil:
		return nil, fmt.Errorf("steprun: step %s needs Accepts, Effect and Next", step.Name)
	case js == nil || markers == nil:
		return nil, fmt.Errorf("steprun: step %s needs JetStream and a marker store", step.Name)
	}
	opts.setDefaults()
	r := &Runner[R]{step: step, js: js, markers: markers, opts: opts}
	h := Handler(r.handle)
	if opts.Metrics != nil {
		h = opts.Metrics.Middleware(step.Name)(h)
	}
	h = logOutcome(opts.Logger, step.Name)(h)
	for i := len(opts.Middleware) - 1; i >= 0; i-- {
		h = opts.Middleware[i](h)
	}
	r.handler = h
	return r, nil
}

// ConsumerConfig is the durable consumer the runner creates or updates.
// Deliveries are unlimited on the server: the runner itself dead-letters a
// message after MaxDeliveries, so nothing is dropped silently, not even a
// message that crashes its worker every time.
func (r *Runner[R]) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       r.step.Consumer.Durable,
		Description:   "blobref step " + r.step.Name,
		FilterSubject: r.step.Consumer.FilterSubject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       r.opts.AckWait,
		MaxDeliver:    -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: max(1000, 4*r.opts.Concurrency),
	}
}

// Run consumes until ctx is done, then stops fetching, lets in-flight
// messages finish (or hands them back after ShutdownGrace) and returns.
func (r *Runner[R]) Run(ctx context.Context) error {
	cons, err := r.js.CreateOrUpdateConsumer(ctx, events.StreamName, r.ConsumerConfig())
	if err != nil && ctx.Err() != nil {
		return nil // shut down before starting
	}
	if err != nil {
		return fmt.Errorf("steprun: %s: consumer: %w", r.step.Name, err)
	}

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

	slots := make(chan struct{}, r.opts.Concurrency)
	var wg sync.WaitGroup
	defer wg.Wait()
	for ctx.Err() == nil {
		// Wait for a free slot, then pull as many messages as slots are free:
		// AckWait runs from delivery, so nothing waits in a client buffer.
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			continue
		}
		free := 1
	fill:
		for free < r.opts.Concurrency {
			select {
			case slots <- struct{}{}:
				free++
			default:
				break fill
			}
		}
		n, err := r.fetch(ctx, cons, free, slots, &wg, work)
		for ; n < free; n++ {
			<-slots
		}
		if err != nil && ctx.Err() == nil {
			r.opts.Logger.Warn("fetch failed", "step", r.step.Name, "error", err)
			sleep(ctx, time.Second)
		}
	}
	return nil
}

// fetch pulls up to n messages and starts a worker for each; it returns how
// many it started. Each worker frees one slot when it is done.
func (r *Runner[R]) fetch(ctx context.Context, cons jetstream.Consumer, n int, slots chan struct{}, wg *sync.WaitGroup, work context.Context) (int, error) {
	fctx, cancel := context.WithTimeout(ctx, r.opts.FetchWait)
	defer cancel()
	batch, err := cons.Fetch(n, jetstream.FetchContext(fctx))
	if err != nil {
		return 0, err
	}
	started := 0
	for msg := range batch.Messages() {
		started++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if ctx.Err() != nil {
				_ = msg.Nak() // shutting down: hand it back at once
				return
			}
			r.handler(work, msg)
		}()
	}
	if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) && !errors.Is(err, jetstream.ErrNoHeartbeat) {
		return started, err
	}
	return started, nil
}

// Handle processes one message, as Run does for each it fetches. It is
// exported for tests that drive the runner message by message.
func (r *Runner[R]) Handle(ctx context.Context, msg jetstream.Msg) Outcome {
	return r.handler(ctx, msg)
}

// handle is the innermost handler: process the message, then settle it.
func (r *Runner[R]) handle(ctx context.Context, msg jetstream.Msg) Outcome {
	stop := r.heartbeat(msg)
	out := r.process(ctx, msg)
	stop()
	return r.settle(msg, out)
}

// heartbeat tells JetStream the message is still being worked on, every
// third of AckWait, until the returned function is called.
func (r *Runner[R]) heartbeat(msg jetstream.Msg) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(r.opts.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = msg.InProgress()
			case <-done:
				return
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// process runs the step for one message and reports the outcome; it never
// acks. A panic in the side effect becomes a transient failure.
func (r *Runner[R]) process(ctx context.Context, msg jetstream.Msg) (out Outcome) {
	meta, err := msg.Metadata()
	if err != nil {
		return Outcome{Kind: Dead, Reason: events.ReasonMalformed, Err: fmt.Errorf("not a JetStream message: %w", err)}
	}
	out.Deliveries, out.Sequence, out.Subject = meta.NumDelivered, meta.Sequence.Stream, msg.Subject()
	defer func() {
		if p := recover(); p != nil {
			out.Kind, out.Reason, out.Err = Retried, "panic", fmt.Errorf("panic: %v", p)
		}
	}()

	ev, err := events.Decode(msg.Subject(), msg.Headers(), msg.Data(), events.WithMaxInlineSize(r.opts.MaxInlineSize))
	if err != nil {
		return out.fail(err)
	}
	out.UploadID = ev.ID
	if ev.Type != r.step.Accepts {
		return out.fail(Permanent(events.ReasonUnknownType, fmt.Errorf("step %s does not consume %s", r.step.Name, ev.Type)))
	}

	// Check: a finished step is skipped without taking a claim.
	m, done, err := r.markers.Get(ctx, ev.ID, r.step.Name)
	if err != nil {
		return out.fail(err)
	}
	if !done {
		m, done, err = r.runOnce(ctx, ev, meta)
		if errors.Is(err, marker.ErrBusy) {
			// Another worker runs this step now; look again later. This is
			// not a failure, so it never dead-letters the message.
			out.Kind, out.Reason, out.Err = Retried, reasonBusy, err
			return out
		}
		if err != nil {
			return out.fail(err)
		}
		out.Kind = Done
		if !done {
			out.Kind = Skipped
		}
	} else {
		out.Kind = Skipped
	}
	if m.Fingerprint != ev.SHA256 {
		return out.fail(Conflict("upload %s was recorded with sha256 %s, this event has %s", ev.ID, m.Fingerprint, ev.SHA256))
	}

	var result R
	if err := json.Unmarshal(m.Result, &result); err != nil {
		return out.fail(fmt.Errorf("marker %s/%s holds a bad result: %w", ev.ID, r.step.Name, err))
	}
	next, err := r.step.Next(ev, result)
	if err != nil {
		return out.fail(err)
	}
	if err := r.inject(ctx, "before-publish"); err != nil {
		return out.fail(err)
	}
	nmsg, err := next.Msg(r.msgID(meta))
	if err != nil {
		return out.fail(err)
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if _, err := r.js.PublishMsg(pctx, nmsg); err != nil {
		return out.fail(fmt.Errorf("publish %s: %w", nmsg.Subject, err))
	}
	if err := r.inject(ctx, "after-publish"); err != nil {
		return out.fail(err)
	}
	return out
}

// runOnce takes the claim on the step and, unless a marker appeared, runs
// the side effect and records it. done reports whether this call did it.
func (r *Runner[R]) runOnce(ctx context.Context, ev *events.Event, meta *jetstream.MsgMetadata) (m marker.Marker, done bool, err error) {
	claim, err := r.markers.Claim(ctx, ev.ID, r.step.Name)
	if err != nil {
		return m, false, err
	}
	defer claim.Release()
	if m, ok := claim.Marker(); ok {
		return m, false, nil
	}
	if meta.NumDelivered > uint64(r.opts.MaxDeliveries) {
		// Earlier deliveries never settled (a crash each time, say): give up
		// before running it yet again.
		return m, false, Permanent(events.ReasonRetriesExhausted,
			fmt.Errorf("delivered %d times, the last allowed is %d", meta.NumDelivered, r.opts.MaxDeliveries))
	}

	if err := r.inject(ctx, "before-effect"); err != nil {
		return m, false, err
	}
	ectx, cancel := context.WithTimeout(ctx, r.opts.StepTimeout)
	result, err := r.step.Effect(ectx, ev)
	cancel()
	if err != nil {
		return m, false, err
	}
	r.opts.Metrics.effectDone(r.step.Name)
	// From here on the side effect is done: nothing may cancel its record.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	if err := r.inject(rctx, "after-effect"); err != nil {
		return m, false, err
	}
	raw, err := json.Marshal(result)
	if err != nil {
		return m, false, fmt.Errorf("encode result: %w", err)
	}
	var inTx func(context.Context, pgx.Tx) error
	if r.step.InTx != nil {
		inTx = func(ctx context.Context, tx pgx.Tx) error { return r.step.InTx(ctx, tx, ev, result) }
	}
	m, won, err := claim.Record(rctx, marker.Marker{
		UploadID: ev.ID, Step: r.step.Name, Fingerprint: ev.SHA256, Result: raw,
	}, inTx)
	if err != nil {
		return m, false, err
	}
	if err := r.inject(rctx, "after-marker"); err != nil {
		return m, false, err
	}
	return m, won, nil
}

// msgID derives the Nats-Msg-Id of the event emitted for an input message:
// a redelivery of the same message cannot emit twice, while a republished
// input (a new stream sequence) flows on.
func (r *Runner[R]) msgID(meta *jetstream.MsgMetadata) string {
	return events.DerivedMsgID(r.step.Name, meta.Stream, meta.Sequence.Stream)
}

func (r *Runner[R]) inject(ctx context.Context, point string) error {
	return failpoint.Inject(ctx, r.step.Name+"/"+point)
}

// settle is the one place that turns an outcome into Ack, NakWithDelay or
// dead letter + Term. A dead letter that cannot be published is retried
// instead: the message is never terminated without its dead letter.
func (r *Runner[R]) settle(msg jetstream.Msg, out Outcome) Outcome {
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	if out.Kind == Retried && out.Reason != reasonBusy && out.Deliveries >= uint64(r.opts.MaxDeliveries) {
		out.Kind, out.Reason = Dead, events.ReasonRetriesExhausted
	}
	switch out.Kind {
	case Done, Skipped:
		if err := r.inject(ctx, "before-ack"); err != nil {
			out.Kind, out.Err = Retried, err
			break
		}
		if err := msg.DoubleAck(ctx); err != nil {
			// The work is recorded; a redelivery will skip it.
			out.Err = fmt.Errorf("ack: %w", err)
		}
		return out
	case Dead:
		if err := r.deadLetter(ctx, msg, out); err != nil {
			out.Kind, out.Err = Retried, errors.Join(out.Err, err)
			break
		}
		if err := msg.Term(); err != nil {
			out.Err = errors.Join(out.Err, fmt.Errorf("term: %w", err))
		}
		return out
	}
	out.Delay = r.backoff(out.Deliveries)
	if err := msg.NakWithDelay(out.Delay); err != nil {
		out.Err = errors.Join(out.Err, fmt.Errorf("nak: %w", err))
	}
	return out
}

func (r *Runner[R]) deadLetter(ctx context.Context, msg jetstream.Msg, out Outcome) error {
	meta, _ := msg.Metadata()
	d := events.DeadLetter{
		Reason:     out.Reason,
		Step:       r.step.Name,
		Subject:    msg.Subject(),
		Deliveries: out.Deliveries,
		Sequence:   out.Sequence,
		Time:       time.Now().UTC(),
	}
	if meta != nil {
		d.Stream = meta.Stream
	}
	if out.Err != nil {
		d.Error = out.Err.Error()
	}
	id := events.DerivedMsgID("dlq-"+r.step.Name, d.Stream, d.Sequence)
	if _, err := r.js.PublishMsg(ctx, events.DeadLetterMsg(d, msg.Headers(), msg.Data(), id)); err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	return nil
}

// backoff is the delay before delivery n+1: BackoffBase doubled per
// delivery, capped at BackoffMax, with ±10% jitter so retries spread out.
func (r *Runner[R]) backoff(n uint64) time.Duration {
	d := r.opts.BackoffBase
	for i := uint64(1); i < n && d < r.opts.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, r.opts.BackoffMax)
	jitter := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	return d + jitter
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
