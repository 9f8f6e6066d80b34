package step

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step/internal/marker"
)

// stage is where a message stands on its way through its batch: the one
// field that says what is left to do with it. It only moves forward.
type stage int32

const (
	// stageReceived: fetched; not yet decoded.
	stageReceived stage = iota
	// stageDecoded: a valid event of the step's type; its marker is to be
	// looked up.
	stageDecoded
	// stageClaimed: the side effect is to run: no marker, and the claim is
	// held, or the step is ReadOnly and takes none (see Step.ReadOnly).
	stageClaimed
	// stageEffected: the side effect is done; its result is to be recorded.
	stageEffected
	// stageDone: its marker was recorded here; its event is to be emitted,
	// then the message acked.
	stageDone
	// stageSkipped: its marker was recorded before; its event is to be
	// emitted again, then the message acked.
	stageSkipped
	// stageFailed: it is to be retried or dead-lettered, as its outcome
	// says; nothing is left to do but settle it.
	stageFailed
	// stageSettled: acked, handed back or dead-lettered.
	stageSettled
)

// job is one message of a batch on its way through the step.
type job[R any] struct {
	msg     jetstream.Msg
	meta    *jetstream.MsgMetadata
	metaErr error
	free    func()    // gives the message's slot in the window back
	start   time.Time // when its handling started, for its duration
	// at is its stage. Atomic: heartbeats read it while side effects run.
	at     atomic.Int32
	ev     *events.Event
	out    Outcome       // what is reported of it; its retry or dead letter once failed
	marker marker.Marker // its marker (done, skipped)
	result R             // the side effect's result (done: what its marker holds)
	next   jetstream.PubAckFuture
	trace  spans // its spans, when tracing is on
}

func (j *job[R]) stage() stage    { return stage(j.at.Load()) }
func (j *job[R]) to(s stage)      { j.at.Store(int32(s)) }
func (j *job[R]) is(s stage) bool { return j.stage() == s }

// fail makes err the job's outcome: permanent errors dead-letter the
// message, all others retry it.
func (j *job[R]) fail(err error) {
	j.out = j.out.fail(err)
	j.to(stageFailed)
}

// retry makes the job's outcome a retry for reason, which is not an error
// of the message itself (another worker holds it, a dependency is down,
// the runner stops, a panic).
func (j *job[R]) retry(reason string, err error) {
	j.out.Kind, j.out.Reason, j.out.Err = Retried, reason, err
	j.to(stageFailed)
}

// handle processes one batch and settles each of its messages.
func (r *Runner[R]) handle(ctx, work context.Context, jobs []*job[R]) {
	start := time.Now()
	for _, j := range jobs {
		j.start = start
	}
	if ctx.Err() != nil {
		// Shutting down: hand them back at once.
		for _, j := range jobs {
			j.retry(reasonShutdown, nil)
			r.settle(j)
		}
		return
	}
	stop := r.heartbeat(jobs)
	r.process(work, jobs)
	stop()
	for _, j := range jobs { // what a panic left unsettled
		r.settle(j)
	}
}

// heartbeat tells JetStream the messages of jobs not yet settled are still
// being worked on, every third of AckWait, until the returned function is
// called; no heartbeat is sent after it returned. A timer, not a goroutine,
// waits in between: most batches end long before their first heartbeat.
func (r *Runner[R]) heartbeat(jobs []*job[R]) (stop func()) {
	var (
		mu      sync.Mutex
		stopped bool
		t       *time.Timer
	)
	beat := func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		for _, j := range jobs {
			if !j.is(stageSettled) {
				_ = j.msg.InProgress()
			}
		}
		t.Reset(r.opts.AckWait / 3)
	}
	mu.Lock()
	t = time.AfterFunc(r.opts.AckWait/3, beat)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

// process runs the step for a batch, settling each message as soon as its
// part of the batch is over: those it need not run at once, the others as
// their side effects are recorded and their events emitted. A panic fails
// every message not yet over as a transient failure, for the caller to
// settle.
func (r *Runner[R]) process(ctx context.Context, jobs []*job[R]) {
	defer func() {
		if p := recover(); p != nil {
			for _, j := range jobs {
				if j.stage() < stageFailed {
					j.retry("panic", fmt.Errorf("panic: %v", p))
				}
			}
		}
	}()
	r.decode(jobs)
	if r.tracing != nil {
		batch := r.tracing.batch(ctx, len(jobs))
		defer batch.End()
		for _, j := range jobs {
			message(r.tracing, ctx, batch, j)
		}
	}
	claims, err := r.claim(ctx, jobs)
	if err != nil {
		failAll(jobs, err)
		return
	}
	var run, ready []*job[R]
	for _, j := range jobs {
		if j.is(stageClaimed) {
			run = append(run, j)
		} else {
			ready = append(ready, j) // failed, busy or finished before
		}
	}
	if claims != nil {
		// Recording a job gives up its claim; the rest (jobs that failed)
		// are given up here, once the batch is over.
		defer claims.Release()
	}
	r.afterRecord(ctx, ready)
	r.emit(ctx, ready)
	r.settleAll(ready)
	if len(run) == 0 {
		return
	}
	r.runEffects(ctx, run, func(group []*job[R]) {
		r.record(ctx, group, claims)
		r.afterRecord(ctx, group)
		r.emit(ctx, group)
		r.settleAll(group)
	})
}

// decode parses each message and refuses events older than the retention
// horizon; duplicates of an upload within the batch wait for a later
// delivery, when the first copy's marker exists.
func (r *Runner[R]) decode(jobs []*job[R]) {
	seen := make(map[string]bool, len(jobs))
	now := time.Now()
	for _, j := range jobs {
		if j.metaErr != nil {
			j.fail(Permanent(events.ReasonMalformed, fmt.Errorf("not a JetStream message: %w", j.metaErr)))
			continue
		}
		ev, err := events.Decode(j.out.Subject, j.msg.Headers(), j.msg.Data(), events.WithMaxInlineSize(r.opts.MaxInlineSize))
		if err != nil {
			j.fail(err)
			continue
		}
		j.ev, j.out.UploadID = ev, ev.ID
		expired := r.expired(ev, now)
		switch {
		case ev.Type != r.step.Consumes:
			j.fail(Permanent(events.ReasonUnknownType, fmt.Errorf("step %s does not consume %s", r.step.Name, ev.Type)))
		case expired != nil:
			j.fail(expired)
		case seen[ev.ID]:
			j.retry(reasonBusy, errors.New("an earlier copy is in the same batch"))
		default:
			seen[ev.ID] = true
			j.to(stageDecoded)
		}
	}
}

// claim looks up the markers of the batch and takes the claims of the
// uploads whose marker is missing, in one round trip; nil when no job is
// left to look up, or when a ReadOnly step runs them all unclaimed. A step
// whose marker exists is skipped. A claim held elsewhere retries the job
// later: that is not a failure and never dead-letters it.
func (r *Runner[R]) claim(ctx context.Context, jobs []*job[R]) (*marker.Claims, error) {
	decoded := in(jobs, stageDecoded)
	if len(decoded) == 0 {
		return nil, nil
	}
	// Messages at their delivery limit need their excused deliveries: they
	// are read in the same round trip, on the claims' connection.
	var ds []marker.Delivery
	for _, j := range decoded {
		if j.out.Deliveries >= uint64(r.opts.MaxDeliveries) { // #nosec G115 -- setDefaults makes MaxDeliveries positive
			d := marker.Delivery{Stream: j.out.Stream, Seq: j.out.Sequence}
			ds = append(ds, d)
			j.out.Excused, j.out.excusedKnown = uint64(r.excuses.unwritten(d)), true // #nosec G115 -- a count of deliveries, never negative (the unwritten excuses; the written ones follow)
		}
	}
	if r.step.ReadOnly && len(ds) == 0 && !r.repeats.Load() {
		// No claim, no look-up: the markers' insert decides (Step.ReadOnly).
		for _, j := range decoded {
			j.to(stageClaimed)
		}
		return nil, nil
	}
	ids := make([]string, len(decoded))
	for i, j := range decoded {
		ids[i] = j.ev.ID
	}
	cctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	claims, err := r.markers.ClaimAndCount(cctx, r.step.Name, ids, ds)
	if err != nil {
		for _, j := range decoded {
			j.out.Excused, j.out.excusedKnown = 0, false // settle reads them, if it must
		}
		return nil, Dependency(DependencyPostgres, err)
	}
	if r.step.ReadOnly && claims.Markers() == 0 {
		r.repeats.Store(false) // first deliveries again: run them unclaimed
	}
	for _, j := range decoded {
		if j.out.excusedKnown {
			j.out.Excused += uint64(claims.Excused(marker.Delivery{Stream: j.out.Stream, Seq: j.out.Sequence})) // #nosec G115 -- a count of deliveries, never negative
		}
		switch m, found := claims.Marker(j.ev.ID); {
		case found:
			j.marker = m
			j.to(stageSkipped)
		case !claims.Held(j.ev.ID):
			j.retry(reasonBusy, marker.ErrBusy)
		case j.out.Deliveries-min(j.out.Deliveries, j.out.Excused) > uint64(r.opts.MaxDeliveries): // #nosec G115 -- setDefaults makes MaxDeliveries positive
			// Earlier deliveries never settled (a crash each time, say):
			// give up before running it yet again. Deliveries an outage
			// excused do not count.
			j.fail(Permanent(events.ReasonRetriesExhausted,
				fmt.Errorf("delivered %d times (%d excused), the last allowed is %d", j.out.Deliveries, j.out.Excused, r.opts.MaxDeliveries)))
		default:
			j.to(stageClaimed)
		}
	}
	return claims, nil
}

// in returns the jobs at stage s, in a slice of their own.
func in[R any](jobs []*job[R], s stage) []*job[R] {
	var out []*job[R]
	for _, j := range jobs {
		if j.is(s) {
			out = append(out, j)
		}
	}
	return out
}

// failAll fails every job not yet over with err.
func failAll[R any](jobs []*job[R], err error) {
	for _, j := range jobs {
		if j.stage() < stageFailed {
			j.fail(err)
		}
	}
}
