package readmodel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/service"
	"github.com/blobref/blobref/pkg/events"
)

// Projector runs the read model's durable consumers.
type Projector struct {
	Pool Execer
	JS   jetstream.JetStream
	// LookUp waits for the durable consumers, which `blobrefctl setup`
	// creates (NATS_SETUP=off), instead of creating them.
	LookUp bool
	Logger *slog.Logger
	// BatchSize is the most messages applied in one round trip [64].
	BatchSize int
	// Hold is the longest a blob_stored event waits, unapplied and
	// unacknowledged, for its upload's completed event or dead letter, so
	// that one statement applies both and writes the upload's row once
	// [250ms]. Until then GET /v1/uploads shows the upload as pending.
	Hold time.Duration
	// Gather is how long a consumer waits, from the first message of a
	// batch, for more to apply with it, up to BatchSize [50ms]. Each batch
	// costs a statement and a commit whatever its size, so at a few
	// uploads a second an event applied at once costs several times what
	// it costs in a batch, on the CPUs the uploads' own path needs.
	// Until then the listing shows the upload a step behind; GET of an
	// upload and a retry of its POST do not wait for it (see package
	// uploads' catchUp).
	Gather time.Duration
}

// The defaults of Projector.Hold and Projector.Gather. Hold is many times
// the few milliseconds between an upload's blob_stored and completed
// events at moderate load.
const (
	DefaultHold   = 250 * time.Millisecond
	DefaultGather = 50 * time.Millisecond
)

// Run consumes until ctx is done. A message is acked once its fact is in
// Postgres; while Postgres fails, the messages are handed back and the
// consumer backs off: a read model never gives up on an event. A message
// that is not a readable event is acked and skipped (its step has
// dead-lettered it, and the dead letter is what the read model records).
//
// A blob_stored event is held back for up to Hold: the statement of its
// upload's completed event or dead letter, when that comes first, applies
// both (see held). On shutdown what is still held is applied, or left to
// be redelivered.
func (p *Projector) Run(ctx context.Context) error {
	hold := p.Hold
	if hold <= 0 {
		hold = DefaultHold
	}
	h := newHeld(hold, p.batchSize()*4)
	var wg sync.WaitGroup
	errs := make([]error, len(events.IngestViewConsumers))
	for i, spec := range events.IngestViewConsumers {
		wg.Go(func() { errs[i] = p.consume(ctx, spec, h) })
	}
	wg.Wait()
	if b := h.all(); len(b.msgs) > 0 {
		if err := p.apply(ctx, b.facts); err != nil {
			p.logger().Warn("read model: cannot record the events held at shutdown; they are redelivered",
				"events", len(b.msgs), "error", err)
		} else {
			ack(b.msgs)
		}
	}
	return errors.Join(errs...)
}

func (p *Projector) batchSize() int {
	if p.BatchSize <= 0 {
		return 64
	}
	return p.BatchSize
}

func (p *Projector) gather() time.Duration {
	if p.Gather <= 0 {
		return DefaultGather
	}
	return p.Gather
}

func (p *Projector) logger() *slog.Logger {
	if p.Logger == nil {
		return slog.Default()
	}
	return p.Logger
}

// consumer returns spec's durable consumer once JetStream has it.
func (p *Projector) consumer(ctx context.Context, spec events.ConsumerSpec) (jetstream.Consumer, error) {
	delay := 100 * time.Millisecond
	for {
		var cons jetstream.Consumer
		var err error
		if p.LookUp {
			cons, err = p.JS.Consumer(ctx, spec.StreamOrDefault(), spec.Durable)
		} else {
			cons, err = p.JS.CreateOrUpdateConsumer(ctx, spec.StreamOrDefault(), service.ViewConsumerConfig(spec))
		}
		if err == nil || ctx.Err() != nil {
			return cons, err
		}
		p.logger().Warn("waiting for the read model's durable consumer", "consumer", spec.Durable,
			"stream", spec.StreamOrDefault(), "error", err, "delay", delay)
		if !sleep(ctx, delay) {
			return nil, ctx.Err()
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// consume runs spec's consumer until ctx is done. Should its pull stop
// (the consumer was deleted, JetStream lost it), it looks the consumer up,
// or creates it, again.
func (p *Projector) consume(ctx context.Context, spec events.ConsumerSpec, h *held) error {
	for {
		cons, err := p.consumer(ctx, spec)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("readmodel: consumer %s: %w", spec.Durable, err)
		}
		err = p.pull(ctx, spec, cons, h)
		if ctx.Err() != nil {
			return nil
		}
		p.logger().Warn("read model: pull stopped, starting again", "consumer", spec.Durable, "error", err)
		sleep(ctx, time.Second)
	}
}

// pull applies what cons delivers until ctx is done or the pull fails.
// The blob_stored consumer puts its facts in h, and applies those that
// come due there; the others take from h the facts of their uploads.
func (p *Projector) pull(ctx context.Context, spec events.ConsumerSpec, cons jetstream.Consumer, h *held) error {
	size := p.batchSize()
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * size))
	if err != nil {
		return err
	}
	defer it.Stop()
	holds := spec.Durable == events.IngestStoredConsumer.Durable
	var delay time.Duration
	for {
		wait, cancel := ctx, context.CancelFunc(func() {})
		if holds {
			if due, ok := h.next(); ok {
				wait, cancel = context.WithDeadline(ctx, due)
			}
		}
		msgs, err := next(wait, it, size, p.gather())
		cancel()
		if err != nil && (ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded)) {
			return err // after ctx is done too: what was not applied is redelivered
		}
		b := p.batch(spec, msgs)
		if holds {
			b = h.put(b, time.Now())
		} else {
			b.add(h.take(b.ids(), time.Now()))
		}
		if len(b.msgs) == 0 {
			continue
		}
		if err := p.apply(ctx, b.facts); err != nil {
			delay = min(max(2*delay, 200*time.Millisecond), 5*time.Second)
			p.logger().Warn("read model: cannot record events, retrying", "consumer", spec.Durable,
				"events", len(b.msgs), "error", err, "delay", delay)
			for _, m := range b.msgs {
				_ = m.NakWithDelay(delay)
			}
			sleep(ctx, delay)
			continue
		}
		delay = 0
		ack(b.msgs)
	}
}

// ack acknowledges msgs; a lost ack redelivers a fact already applied.
func ack(msgs []jetstream.Msg) {
	for _, m := range msgs {
		_ = m.Ack()
	}
}

// next waits for a message, then for more until gather has passed since
// it or size have come: a batch of what arrived together. Past gather it
// takes only what is already delivered.
func next(ctx context.Context, it jetstream.MessagesContext, size int, gather time.Duration) ([]jetstream.Msg, error) {
	first, err := it.Next(jetstream.NextContext(ctx))
	if err != nil {
		return nil, err
	}
	msgs := []jetstream.Msg{first}
	until := time.Now().Add(gather)
	for len(msgs) < size && ctx.Err() == nil {
		m, err := it.Next(jetstream.NextMaxWait(max(time.Until(until), time.Millisecond)))
		if err != nil {
			break // nothing more came
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// batch reads the facts of msgs. A message without one (see fact) is
// acknowledged at once.
func (p *Projector) batch(spec events.ConsumerSpec, msgs []jetstream.Msg) batch {
	var b batch
	for _, m := range msgs {
		if f, ok := p.fact(spec, m); ok {
			b.facts = append(b.facts, f)
			b.msgs = append(b.msgs, m)
		} else {
			_ = m.Ack()
		}
	}
	return b
}

// apply records facts, on a context that shutdown does not cancel
// half-way.
func (p *Projector) apply(ctx context.Context, facts []Fact) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := Apply(actx, p.Pool, facts...); err != nil {
		return pgError(err)
	}
	return nil
}

// fact reads the fact of m; ok is false for a message to skip.
func (p *Projector) fact(spec events.ConsumerSpec, m jetstream.Msg) (f Fact, ok bool) {
	meta, err := m.Metadata()
	if err != nil {
		p.logger().Warn("read model: skipped a message without metadata", "consumer", spec.Durable, "subject", m.Subject())
		return Fact{}, false
	}
	if spec.StreamOrDefault() == events.DLQStreamName {
		f, ok = DeadLetter(m.Subject(), m.Headers(), m.Data(), meta.Sequence.Stream, meta.Timestamp)
		if !ok {
			p.logger().Warn("read model: skipped a message that is not a dead letter of an upload", "subject", m.Subject(),
				"seq", meta.Sequence.Stream)
		}
		return f, ok
	}
	ev, err := events.Decode(m.Subject(), m.Headers(), m.Data())
	if err != nil {
		p.logger().Warn("read model: skipped an event it cannot read", "consumer", spec.Durable, "subject", m.Subject(),
			"seq", meta.Sequence.Stream, "reason", events.ReasonOf(err))
		return Fact{}, false
	}
	switch ev.Type {
	case events.TypeBlobStored:
		return Stored(ev, meta.Timestamp, meta.Sequence.Stream), true
	case events.TypeCompleted:
		return Completed(ev, meta.Timestamp, meta.Sequence.Stream), true
	}
	return Fact{}, false
}

// pgError keeps what Postgres said, without the statement's arguments.
func pgError(err error) error {
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok {
		return fmt.Errorf("readmodel: postgres: %s (%s)", pe.Message, pe.Code)
	}
	return fmt.Errorf("readmodel: %w", err)
}

// sleep waits d or until ctx is done; false when ctx is done.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
