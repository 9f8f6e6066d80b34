package step

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step/internal/marker"
)

// record writes the markers of the effected jobs of group, with the step's
// own writes, in one transaction that gives up their claims (claims is nil
// for a ReadOnly step's jobs run unclaimed); the items the step refuses
// fail with their error, and the transaction runs without them
// (marker.Claims.Record). Each job ends done (its marker recorded here),
// skipped (another worker's was there) or failed.
func (r *Runner[R]) record(ctx context.Context, group []*job[R], claims *marker.Claims) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	for _, j := range in(group, stageEffected) {
		if err := r.inject(rctx, pointBeforeMarker); err != nil {
			j.fail(err)
		}
	}
	done := in(group, stageEffected)
	if len(done) == 0 {
		return
	}
	ms := make([]marker.Marker, len(done))
	for i, j := range done {
		raw, err := json.Marshal(j.result)
		if err != nil {
			failAll(done, fmt.Errorf("encode result: %w", err))
			return
		}
		ms[i] = marker.Marker{UploadID: j.ev.ID, Step: r.step.Name, Fingerprint: j.ev.SHA256, Result: raw}
	}
	items := func(idx []int) []Item[R] { // the items of done at idx
		out := make([]Item[R], len(idx))
		for k, i := range idx {
			out[k] = Item[R]{Event: done[i].ev, Result: done[i].result}
		}
		return out
	}
	var writes marker.Writes
	if r.step.InTx != nil {
		writes.InTx = func(ctx context.Context, tx pgx.Tx, won []int) ([]error, error) {
			if len(won) == 0 {
				return nil, nil
			}
			return r.step.InTx(ctx, tx, items(won))
		}
		if r.step.QueueInTx != nil {
			writes.Queue = func(b *pgx.Batch, idx []int) { r.step.QueueInTx(b, items(idx)) }
		}
	}
	var spans []trace.Span
	if r.tracing != nil {
		spans = make([]trace.Span, len(done))
		for i, j := range done {
			_, spans[i] = child(r.tracing, rctx, j, partRecord)
		}
	}
	var (
		stored  []marker.Marker
		won     []bool
		refused []error
		err     error
	)
	if claims != nil {
		stored, won, refused, err = claims.Record(rctx, ms, writes)
	} else { // a ReadOnly step's, run unclaimed
		stored, won, refused, err = r.markers.RecordMany(rctx, ms, writes)
	}
	if err != nil {
		err = Dependency(DependencyPostgres, err)
		for _, span := range spans {
			end(span, err)
		}
		failAll(done, err)
		return
	}
	for i, j := range done {
		if spans != nil {
			var err error
			if refused != nil {
				err = refused[i]
			}
			end(spans[i], err)
		}
		if refused != nil && refused[i] != nil {
			j.fail(refused[i])
			continue
		}
		j.marker = stored[i]
		if won[i] {
			if r.step.ReadOnly { // its side effect is what commits with the marker
				r.opts.Metrics.effectDone(r.step.Name)
			}
			j.to(stageDone)
		} else {
			j.to(stageSkipped)
			if claims == nil {
				// A repeat run unclaimed: look the next batches' markers up
				// first, as long as repeats come (Runner.repeats).
				r.repeats.Store(true)
			}
		}
		if err := r.inject(rctx, pointAfterMarker); err != nil {
			j.fail(err)
		}
	}
}

// emit publishes the event of every job whose marker exists (done or
// skipped), all at once, and waits for JetStream to acknowledge each; a
// step without Emit publishes nothing. A job whose marker holds another
// fingerprint than its event is a conflict.
func (r *Runner[R]) emit(ctx context.Context, jobs []*job[R]) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	var sent []*job[R]
	for _, j := range jobs {
		if !j.is(stageDone) && !j.is(stageSkipped) {
			continue
		}
		if j.marker.Fingerprint != j.ev.SHA256 {
			j.fail(Conflict("upload %s was recorded with sha256 %s, this event has %s", j.ev.ID, j.marker.Fingerprint, j.ev.SHA256))
			continue
		}
		if r.step.Emit == nil {
			continue // the step ends the chain
		}
		// Done here, the marker holds the job's own result. Skipped, it
		// holds another run's, which may differ from a result this run's
		// side effect left in the job: decode it into a zero value.
		var result R
		if j.is(stageDone) {
			result = j.result
		} else if err := json.Unmarshal(j.marker.Result, &result); err != nil {
			j.fail(fmt.Errorf("marker %s/%s holds a bad result: %w", j.ev.ID, r.step.Name, err))
			continue
		}
		next, err := r.step.Emit(j.ev, result)
		if err != nil {
			j.fail(err)
			continue
		}
		if err := r.inject(pctx, pointBeforePublish); err != nil {
			j.fail(err)
			continue
		}
		if _, j.trace.publish = child(r.tracing, pctx, j, partPublish); j.trace.publish != nil {
			SetTraceContext(next, j.trace.publish.SpanContext())
		}
		nmsg, err := next.Msg(r.msgID(j.meta))
		if err != nil {
			end(j.trace.publish, err)
			j.fail(err)
			continue
		}
		if j.next, err = r.js.PublishMsgAsync(nmsg); err != nil {
			err = Dependency(DependencyJetStream, fmt.Errorf("publish %s: %w", nmsg.Subject, err))
			end(j.trace.publish, err)
			j.fail(err)
			continue
		}
		sent = append(sent, j)
	}
	for _, j := range sent {
		var err error
		select {
		case <-j.next.Ok():
		case perr := <-j.next.Err():
			err = Dependency(DependencyJetStream, fmt.Errorf("publish %s: %w", j.next.Msg().Subject, perr))
		case <-pctx.Done():
			err = Dependency(DependencyJetStream, fmt.Errorf("publish %s: no acknowledgement: %w", j.next.Msg().Subject, pctx.Err()))
		}
		end(j.trace.publish, err)
		if err != nil {
			j.fail(err)
			continue
		}
		if err := r.inject(pctx, pointAfterPublish); err != nil {
			j.fail(err)
		}
	}
}

// msgID derives the Nats-Msg-Id of the event emitted for an input message:
// a redelivery of the same message cannot emit twice, while a republished
// input (a new stream sequence) flows on.
func (r *Runner[R]) msgID(meta *jetstream.MsgMetadata) string {
	return events.DerivedMsgID(r.step.Name, meta.Stream, meta.Sequence.Stream)
}

// afterRecord runs the step's AfterRecord for every job whose marker exists
// with its event's fingerprint, before its event is emitted (so that what
// follows the step sees the clean-up done); a failure is logged, the job
// stays done.
func (r *Runner[R]) afterRecord(ctx context.Context, jobs []*job[R]) {
	if r.step.AfterRecord == nil {
		return
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
	defer cancel()
	for _, j := range jobs {
		if !j.is(stageDone) && !j.is(stageSkipped) || j.marker.Fingerprint != j.ev.SHA256 {
			continue
		}
		if err := r.step.AfterRecord(actx, j.ev); err != nil {
			r.opts.Logger.Warn("after record", "step", r.step.Name, "upload_id", j.ev.ID, "err", err)
		}
	}
}
