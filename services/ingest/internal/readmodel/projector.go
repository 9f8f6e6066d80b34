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
}

// Run consumes until ctx is done. A message is acked once its fact is in
// Postgres; while Postgres fails, the messages are handed back and the
// consumer backs off: a read model never gives up on an event. A message
// that is not a readable event is acked and skipped (its step has
// dead-lettered it, and the dead letter is what the read model records).
func (p *Projector) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make([]error, len(events.IngestViewConsumers))
	for i, spec := range events.IngestViewConsumers {
		wg.Go(func() { errs[i] = p.consume(ctx, spec) })
	}
	wg.Wait()
	return errors.Join(errs...)
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
func (p *Projector) consume(ctx context.Context, spec events.ConsumerSpec) error {
	for {
		cons, err := p.consumer(ctx, spec)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("readmodel: consumer %s: %w", spec.Durable, err)
		}
		err = p.pull(ctx, spec, cons)
		if ctx.Err() != nil {
			return nil
		}
		p.logger().Warn("read model: pull stopped, starting again", "consumer", spec.Durable, "error", err)
		sleep(ctx, time.Second)
	}
}

// pull applies what cons delivers until ctx is done or the pull fails.
func (p *Projector) pull(ctx context.Context, spec events.ConsumerSpec, cons jetstream.Consumer) error {
	size := p.BatchSize
	if size <= 0 {
		size = 64
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * size))
	if err != nil {
		return err
	}
	defer it.Stop()
	var delay time.Duration
	for {
		msgs, err := next(ctx, it, size)
		if err != nil {
			return err // after ctx is done too: what was not applied is redelivered
		}
		if err := p.apply(ctx, spec, msgs); err != nil {
			delay = min(max(2*delay, 200*time.Millisecond), 5*time.Second)
			p.logger().Warn("read model: cannot record events, retrying", "consumer", spec.Durable,
				"events", len(msgs), "error", err, "delay", delay)
			for _, m := range msgs {
				_ = m.NakWithDelay(delay)
			}
			sleep(ctx, delay)
			continue
		}
		delay = 0
		for _, m := range msgs {
			_ = m.Ack() // a lost ack redelivers a fact already applied
		}
	}
}

// next waits for a message, then takes those already delivered with it,
// up to size: a batch of what arrived together.
func next(ctx context.Context, it jetstream.MessagesContext, size int) ([]jetstream.Msg, error) {
	first, err := it.Next(jetstream.NextContext(ctx))
	if err != nil {
		return nil, err
	}
	msgs := []jetstream.Msg{first}
	for len(msgs) < size {
		m, err := it.Next(jetstream.NextMaxWait(time.Millisecond))
		if err != nil {
			break // nothing more buffered
		}
		msgs = append(msgs, m)
	}
	return msgs, nil
}

// apply records the facts of msgs, on a context that shutdown does not
// cancel half-way.
func (p *Projector) apply(ctx context.Context, spec events.ConsumerSpec, msgs []jetstream.Msg) error {
	facts := make([]Fact, 0, len(msgs))
	for _, m := range msgs {
		if f, ok := p.fact(spec, m); ok {
			facts = append(facts, f)
		}
	}
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
