// Package steptest runs a step against real servers, as river's rivertest
// runs a job: given a JetStream server (with the UPLOADS streams) and a
// Postgres schema holding the step tables (step.Migrate), a Harness runs
// the step under the real runner, publishes events to it, and reports what
// became of each message (its outcomes) and the events the step emitted.
//
//	h := steptest.New(t, js, pool, myStep, step.Options{})
//	h.Start()
//	res := h.Handle(ev) // publish ev and wait until it is done, skipped or dead
//	if res.Outcome.Kind != step.Done || res.Emitted == nil { ... }
//
// Nothing is mocked: the markers, claims, retries, dead letters and
// emitted events are the runner's own. Every wait is bounded by
// Harness.Timeout and fails the test when it passes.
package steptest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
)

// DefaultTimeout bounds every wait of a Harness unless it sets its own.
const DefaultTimeout = 30 * time.Second

// pollInterval is how often a wait that polls JetStream looks again.
const pollInterval = 20 * time.Millisecond

// Harness runs one step for one test.
type Harness[R any] struct {
	// Runner is the step's runner: Unavailable, ConsumerConfig, ...
	Runner *step.Runner[R]
	// Timeout bounds every wait [DefaultTimeout].
	Timeout time.Duration

	t       testing.TB
	js      jetstream.JetStream
	step    step.Step[R]
	emitted *Events

	mu       sync.Mutex
	outcomes []step.Outcome
	changed  chan struct{} // closed and replaced at each outcome

	cancel  context.CancelFunc
	stopped chan struct{}
}

// New returns a harness of s over js (whose connection also collects the
// events the step emits) and pool, not yet started. The zero fields of
// opts take values fit for tests: back-off 10ms to 50ms, pulls of 200ms,
// and a logger that writes to the test's output; OnOutcome, when set, is
// called besides the harness's own. The test's cleanup stops the runner.
func New[R any](t testing.TB, js jetstream.JetStream, pool *pgxpool.Pool, s step.Step[R], opts step.Options) *Harness[R] {
	t.Helper()
	h := &Harness[R]{Timeout: DefaultTimeout, t: t, js: js, step: s, changed: make(chan struct{})}
	if opts.BackoffBase == 0 {
		opts.BackoffBase = 10 * time.Millisecond
	}
	if opts.BackoffMax == 0 {
		opts.BackoffMax = max(50*time.Millisecond, opts.BackoffBase)
	}
	if opts.FetchWait == 0 {
		opts.FetchWait = 200 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	observe := opts.OnOutcome
	opts.OnOutcome = func(o step.Outcome) {
		h.mu.Lock()
		h.outcomes = append(h.outcomes, o)
		close(h.changed)
		h.changed = make(chan struct{})
		h.mu.Unlock()
		if observe != nil {
			observe(o)
		}
	}
	r, err := step.NewRunner(js, pool, s, opts)
	if err != nil {
		t.Fatalf("steptest: %v", err)
	}
	h.Runner = r
	// What the step publishes carries a Nats-Msg-Id derived from its name
	// (events.DerivedMsgID): that tells its events from the test's own.
	h.emitted = subscribe(t, js.Conn(), events.StreamSubjects, func(m *nats.Msg) bool {
		return strings.HasPrefix(m.Header.Get(events.HeaderMsgID), s.Name+"/")
	})
	t.Cleanup(func() {
		if h.cancel != nil {
			h.Stop()
		}
	})
	return h
}

// Start runs the runner until Stop, Shutdown or the test's end. An error
// from Run fails the test.
func (h *Harness[R]) Start() {
	h.t.Helper()
	if h.cancel != nil {
		h.t.Fatal("steptest: Start: the runner is running")
	}
	ctx, cancel := context.WithCancel(context.Background()) // #nosec G118 -- kept in h.cancel, which Stop and the test's cleanup call
	h.cancel, h.stopped = cancel, make(chan struct{})
	stopped := h.stopped
	go func() {
		defer close(stopped)
		if err := h.Runner.Run(ctx); err != nil {
			h.t.Errorf("steptest: Run: %v", err)
		}
	}()
}

// Shutdown starts the runner's shutdown, as SIGTERM does, and returns a
// channel closed once Run returned: in-flight side effects may still
// finish meanwhile.
func (h *Harness[R]) Shutdown() <-chan struct{} {
	h.t.Helper()
	if h.cancel == nil {
		h.t.Fatal("steptest: Shutdown: the runner is not running")
	}
	h.cancel()
	h.cancel = nil
	return h.stopped
}

// Stop shuts the runner down and waits until Run returned. It may be
// started again.
func (h *Harness[R]) Stop() {
	h.t.Helper()
	<-h.Shutdown()
}

// Publish publishes ev to JetStream with Nats-Msg-Id msgID, or with none if
// msgID is "" (a new message, even for an event published before). It
// returns the message's stream sequence.
func (h *Harness[R]) Publish(ev *events.Event, msgID string) uint64 {
	h.t.Helper()
	msg, err := ev.Msg(msgID)
	if err != nil {
		h.t.Fatalf("steptest: Msg: %v", err)
	}
	return h.PublishMsg(msg)
}

// PublishMsg publishes msg as it is, such as a malformed event, and returns
// its stream sequence.
func (h *Harness[R]) PublishMsg(msg *nats.Msg) uint64 {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
	defer cancel()
	ack, err := h.js.PublishMsg(ctx, msg)
	if err != nil {
		h.t.Fatalf("steptest: publish %s: %v", msg.Subject, err)
	}
	return ack.Sequence
}

// Result is what became of one message of Handle.
type Result struct {
	// Outcome is its final outcome: done, skipped or dead.
	Outcome step.Outcome
	// Retries are the deliveries before it that were retried.
	Retries []step.Outcome
	// Emitted is the event the step published for it; nil for a step that
	// ends the chain, and for a dead letter.
	Emitted *events.Event
	// DeadLetter is its dead letter, when it was dead-lettered.
	DeadLetter *events.DeadLetter
}

// Handle publishes ev as a new message, waits until the step settled it
// for good (done, skipped or dead, through however many retries), and
// reports what became of it. The runner must be started.
func (h *Harness[R]) Handle(ev *events.Event) Result {
	h.t.Helper()
	seq := h.Publish(ev, "")
	final, outs := h.await(fmt.Sprintf("final outcome of message %d (%s)", seq, ev.ID), func(o step.Outcome) bool {
		return o.Sequence == seq && o.Kind != step.Retried
	})
	res := Result{Outcome: final}
	for _, o := range outs {
		if o.Sequence == seq && o.Kind == step.Retried {
			res.Retries = append(res.Retries, o)
		}
	}
	switch res.Outcome.Kind {
	case step.Dead:
		d, _ := h.AwaitDeadLetter(res.Outcome.Subject)
		res.DeadLetter = &d
	case step.Done, step.Skipped:
		if h.step.Emit != nil {
			id := events.DerivedMsgID(h.step.Name, res.Outcome.Stream, seq)
			res.Emitted = h.emitted.awaitMsgID(h.t, id, h.Timeout)
		}
	}
	return res
}

// Outcomes returns the outcomes of the messages of upload id settled so
// far, in order; every message's with id "".
func (h *Harness[R]) Outcomes(id string) []step.Outcome {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []step.Outcome
	for _, o := range h.outcomes {
		if id == "" || o.UploadID == id {
			out = append(out, o)
		}
	}
	return out
}

// Count returns how many messages were settled with kind so far.
func (h *Harness[R]) Count(kind step.Kind) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, o := range h.outcomes {
		if o.Kind == kind {
			n++
		}
	}
	return n
}

// AwaitOutcome waits until a message of upload id was settled with kind,
// and returns that outcome.
func (h *Harness[R]) AwaitOutcome(id string, kind step.Kind) step.Outcome {
	h.t.Helper()
	o, _ := h.await(fmt.Sprintf("%s outcome of %s", kind, id), func(o step.Outcome) bool {
		return o.UploadID == id && o.Kind == kind
	})
	return o
}

// AwaitCount waits until n messages in all were settled with kind.
func (h *Harness[R]) AwaitCount(kind step.Kind, n int) {
	h.t.Helper()
	deadline := time.After(h.Timeout)
	for {
		h.mu.Lock()
		changed := h.changed
		h.mu.Unlock()
		if h.Count(kind) >= n {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			h.t.Fatalf("steptest: got %d %s outcomes within %v, want %d", h.Count(kind), kind, h.Timeout, n)
		}
	}
}

// await waits until an outcome satisfies match, and returns it and every
// outcome so far.
func (h *Harness[R]) await(what string, match func(step.Outcome) bool) (step.Outcome, []step.Outcome) {
	h.t.Helper()
	deadline := time.After(h.Timeout)
	for {
		h.mu.Lock()
		outs, changed := append([]step.Outcome(nil), h.outcomes...), h.changed
		h.mu.Unlock()
		for _, o := range outs {
			if match(o) {
				return o, outs
			}
		}
		select {
		case <-changed:
		case <-deadline:
			h.t.Fatalf("steptest: no %s within %v; outcomes: %v", what, h.Timeout, outs)
			return step.Outcome{}, nil
		}
	}
}

// Emitted are the events the step published, in the order they came.
func (h *Harness[R]) Emitted() *Events { return h.emitted }

// DeadLetters returns every dead letter in the dead-letter stream, by the
// subject of its original message.
func (h *Harness[R]) DeadLetters() map[string]events.DeadLetter {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), h.Timeout)
	defer cancel()
	s, err := h.js.Stream(ctx, events.DLQStreamName)
	if err != nil {
		h.t.Fatalf("steptest: stream %s: %v", events.DLQStreamName, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		h.t.Fatalf("steptest: stream %s: %v", events.DLQStreamName, err)
	}
	out := map[string]events.DeadLetter{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		raw, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			h.t.Fatalf("steptest: dead letter %d: %v", seq, err)
		}
		d, err := events.ParseDeadLetter(raw.Header)
		if err != nil {
			h.t.Fatalf("steptest: dead letter %d: %v", seq, err)
		}
		out[d.Subject] = d
	}
	return out
}

// AwaitDeadLetters waits until the dead-letter stream holds dead letters of
// at least n original subjects, and returns them as DeadLetters does; any
// number but n fails the test.
func (h *Harness[R]) AwaitDeadLetters(n int) map[string]events.DeadLetter {
	h.t.Helper()
	deadline := time.Now().Add(h.Timeout)
	for {
		d := h.DeadLetters()
		if len(d) >= n || time.Now().After(deadline) {
			if len(d) != n {
				h.t.Fatalf("steptest: dead letters: got %d (%v), want %d", len(d), d, n)
			}
			return d
		}
		time.Sleep(pollInterval)
	}
}

// AwaitDeadLetter waits until the dead-letter stream holds a dead letter of
// the message published on subject, and returns the latest one with the
// original body it carries.
func (h *Harness[R]) AwaitDeadLetter(subject string) (events.DeadLetter, []byte) {
	h.t.Helper()
	ctx := context.Background()
	s, err := h.js.Stream(ctx, events.DLQStreamName)
	if err != nil {
		h.t.Fatalf("steptest: stream %s: %v", events.DLQStreamName, err)
	}
	deadline := time.Now().Add(h.Timeout)
	for {
		raw, err := s.GetLastMsgForSubject(ctx, events.DeadLetterSubject(subject))
		if err == nil {
			d, err := events.ParseDeadLetter(raw.Header)
			if err != nil {
				h.t.Fatalf("steptest: dead letter of %s: %v", subject, err)
			}
			return d, raw.Data
		}
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			h.t.Fatalf("steptest: dead letter of %s: %v", subject, err)
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("steptest: no dead letter of %s within %v", subject, h.Timeout)
		}
		time.Sleep(pollInterval)
	}
}
