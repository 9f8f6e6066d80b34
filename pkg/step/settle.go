package step

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step/internal/marker"
)

// settleAll settles each job of jobs not yet settled.
func (r *Runner[R]) settleAll(jobs []*job[R]) {
	for _, j := range jobs {
		r.settle(j)
	}
}

// settle is the one place that turns a message's stage and outcome into
// Ack, Nak, NakWithDelay or dead letter + Term, and the one way a message
// leaves the runner: it then reports the outcome (metrics, log, OnOutcome)
// and gives the message's slot back. A message is settled once; settling it
// again does nothing.
//
// A done or skipped message is acked. A failed one is dead-lettered when its
// failure is permanent, or when it used up MaxDeliveries deliveries that
// were not excused; a dead letter that cannot be published retries it
// instead: the message is never terminated without its dead letter. A
// failure that is an outage (see judge) is retried and its delivery is
// excused; one handed back at shutdown is retried at once (Nak), so that
// another replica may take it; every other retry waits its back-off.
func (r *Runner[R]) settle(j *job[R]) {
	out := j.out
	switch s := j.stage(); s {
	case stageSettled:
		return
	case stageDone:
		out.Kind = Done
	case stageSkipped:
		out.Kind = Skipped
	case stageFailed:
	default:
		// Left on its way by a panic that unwound the batch.
		out.Kind, out.Reason, out.Err = Retried, "panic", fmt.Errorf("left unfinished at stage %d", s)
	}
	j.to(stageSettled)
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	out = r.decide(ctx, j.msg, out)
	settled(j.trace.span, out)
	r.observe(out, j.start)
	j.free()
}

// decide acks, naks or terminates msg as out says, and returns the outcome
// as it ended.
func (r *Runner[R]) decide(ctx context.Context, msg jetstream.Msg, out Outcome) Outcome {
	out = r.judge(ctx, out)
	if out.Kind == Retried && out.Outage == "" && out.Reason != reasonBusy && out.Reason != reasonShutdown &&
		out.Deliveries >= uint64(r.opts.MaxDeliveries) { // #nosec G115 -- setDefaults makes MaxDeliveries positive
		switch counted, err := r.counted(ctx, out); {
		case err != nil:
			out.Err = errors.Join(out.Err, err) // not known to be used up: retried
		case counted >= uint64(r.opts.MaxDeliveries): // #nosec G115 -- setDefaults makes MaxDeliveries positive
			out.Kind, out.Reason = Dead, events.ReasonRetriesExhausted
		}
	}
	switch out.Kind {
	case Done, Skipped:
		if err := r.inject(ctx, pointBeforeAck); err != nil {
			out.Kind, out.Err = Retried, err
			break
		}
		// The event it caused is acknowledged by JetStream already: if this
		// ack is lost, the redelivery finds the marker and re-emits under
		// the same Nats-Msg-Id.
		if err := msg.Ack(); err != nil {
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
	if out.Outage != "" && out.Stream != "" {
		r.excuses.add(marker.Delivery{Stream: out.Stream, Seq: out.Sequence})
	}
	if out.Reason == reasonShutdown {
		if err := msg.Nak(); err != nil {
			out.Err = errors.Join(out.Err, fmt.Errorf("nak: %w", err))
		}
		return out
	}
	out.Delay = r.backoff(out.Deliveries)
	if err := msg.NakWithDelay(out.Delay); err != nil {
		out.Err = errors.Join(out.Err, fmt.Errorf("nak: %w", err))
	}
	return out
}

// judge tells the breaker how a message went, and marks a failure as an
// outage (Outcome.Outage) when it says a dependency is down, or when it
// happened while one is: every delivery spent during an outage is excused.
func (r *Runner[R]) judge(ctx context.Context, out Outcome) Outcome {
	switch {
	case out.Kind == Done || out.Kind == Skipped:
		r.breaker.succeeded()
	case out.Kind != Retried || out.Outage != "" || out.Reason == reasonBusy || out.Reason == reasonShutdown:
	default:
		if o, ok := classify(out.Err); ok && r.breaker.report(ctx, o, out.Err) {
			out.Outage, out.Reason = o.dependency, reasonOutage
		} else if dep, ok := r.breaker.excusing(); ok {
			out.Outage, out.Reason = dep, reasonOutage
		}
	}
	return out
}

// counted is how many of the message's deliveries count against it: all
// but those excused. The claim read the excused deliveries of a message
// that it took at its limit; only one that failed before (its claim
// failed) is looked up here, with no connection of its batch's held.
func (r *Runner[R]) counted(ctx context.Context, out Outcome) (uint64, error) {
	if !out.excusedKnown && out.Stream != "" {
		d := marker.Delivery{Stream: out.Stream, Seq: out.Sequence}
		excused, err := r.excuses.counts(ctx, []marker.Delivery{d})
		if err != nil {
			return 0, Dependency(DependencyPostgres, fmt.Errorf("excused deliveries: %w", err))
		}
		out.Excused = uint64(excused[d]) // #nosec G115 -- a count of deliveries, never negative
	}
	return out.Deliveries - min(out.Deliveries, out.Excused), nil
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
	jitter := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10 // #nosec G404 -- retry jitter, no secret
	return d + jitter
}
