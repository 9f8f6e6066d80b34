package runner_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/steptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// timeout bounds every wait for the runner.
const timeout = 20 * time.Second

// effectFunc lets each test decide what the side effect does per upload id.
type effectFunc func(ctx context.Context, ev *events.Event, call int) error

// holding is a side effect that counts the side effects started and, for
// the uploads slow picks, waits until release is closed or its message's
// context ends.
func holding(release <-chan struct{}, started *atomic.Int32, slow func(id string) bool) effectFunc {
	return func(ctx context.Context, ev *events.Event, _ int) error {
		started.Add(1)
		if slow(ev.ID) {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
}

// awaitStarted waits until n side effects of holding have started.
func awaitStarted(t *testing.T, started *atomic.Int32, n int32) {
	t.Helper()
	for deadline := time.Now().Add(timeout); started.Load() != n; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("side effects started: %d, want %d", started.Load(), n)
		}
	}
}

// batchSizes has h record the size of each batch it records (set before
// start); the function it returns reads them.
func (h *harness) batchSizes() func() []int {
	var mu sync.Mutex
	var sizes []int
	h.inTx = func(items []step.Item[events.Blob]) []error {
		mu.Lock()
		defer mu.Unlock()
		sizes = append(sizes, len(items))
		return nil
	}
	return func() []int {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(sizes)
	}
}

// harness runs a blob-like step under steptest: its side effect counts its
// calls per upload id and does what the test's effect says.
type harness struct {
	*steptest.Harness[events.Blob]
	t      *testing.T
	nats   *testenv.NATS
	js     jetstream.JetStream
	pg     *testenv.Postgres
	reg    *prometheus.Registry
	logs   *testenv.SyncBuffer // what the runner logged
	stored *steptest.Events    // what the step emitted: blob_stored events
	mu     sync.Mutex
	calls  map[string]int
	effect effectFunc
	inTx   func(items []step.Item[events.Blob]) []error      // set before start
	after  func(ctx context.Context, ev *events.Event) error // AfterRecord; set before start
}

func setup(t *testing.T, opts step.Options, effect effectFunc) *harness {
	t.Helper()
	h := newHarness(t, opts, effect)
	h.Start()
	return h
}

// newHarness builds the runner without starting it.
func newHarness(t *testing.T, opts step.Options, effect effectFunc) *harness {
	t.Helper()
	return newHarnessOn(t, testenv.StartPostgres(t), nil, opts, effect)
}

// newHarnessOn builds the runner over pg, with the step's own dependencies
// probes, without starting it.
func newHarnessOn(t *testing.T, pg *testenv.Postgres, probes map[string]step.Probe, opts step.Options, effect effectFunc) *harness {
	t.Helper()
	h := &harness{t: t, calls: map[string]int{}, effect: effect, reg: prometheus.NewRegistry(), pg: pg, logs: &testenv.SyncBuffer{}}
	h.nats = testenv.StartNATS(t)
	_, h.js = h.nats.Connect()

	s := step.Step[events.Blob]{
		Name:     "blob",
		Consumes: events.TypeRequested,
		Durable:  events.BlobWriterConsumer.Durable,
		Effect: func(ctx context.Context, ev *events.Event) (events.Blob, error) {
			h.mu.Lock()
			h.calls[ev.ID]++
			call := h.calls[ev.ID]
			h.mu.Unlock()
			if h.effect != nil {
				if err := h.effect(ctx, ev, call); err != nil {
					return events.Blob{}, err
				}
			}
			return events.Blob{Key: "uploads/" + ev.ID, Size: int64(len(ev.Data)), SHA256: ev.SHA256, ContentType: ev.ContentType}, nil
		},
		InTx: func(_ context.Context, _ pgx.Tx, items []step.Item[events.Blob]) ([]error, error) {
			if h.inTx == nil {
				return nil, nil
			}
			return h.inTx(items), nil
		},
		Emit: func(ev *events.Event, b events.Blob) (*events.Event, error) {
			return events.NewBlobStored(ev, b, "/test")
		},
		AfterRecord: func(ctx context.Context, ev *events.Event) error {
			if h.after == nil {
				return nil
			}
			return h.after(ctx, ev)
		},
		Probes: probes,
	}
	if opts.Metrics == nil {
		m, err := step.NewMetrics(h.reg)
		if err != nil {
			t.Fatal(err)
		}
		opts.Metrics = m
	}
	opts.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), h.logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.Harness = steptest.New(t, h.js, h.pg.Pool, s, opts)
	h.Timeout = timeout
	h.stored = h.Emitted()
	return h
}

func (h *harness) callsOf(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.calls[id]
}

// publish sends a request event for id with data; msgID "" republishes
// without de-duplication.
func (h *harness) publish(id string, data []byte, msgID string) {
	h.t.Helper()
	ev, err := events.NewRequested(events.Request{
		ID: id, Source: "/test", Subject: "users/" + id + "/avatar", ContentType: "image/png", Data: data,
	})
	if err != nil {
		h.t.Fatalf("NewRequested: %v", err)
	}
	h.Publish(ev, msgID)
}

// awaitLog waits until the runner logged text.
func (h *harness) awaitLog(text string) {
	h.t.Helper()
	awaitLog(h.t, h.logs, text)
}

// awaitInFlight waits until blobref_step_in_flight says n messages are in
// the runner's hands: fetched, and in a batch, not yet settled.
func (h *harness) awaitInFlight(n float64) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for got := h.gauge("blobref_step_in_flight"); got != n; got = h.gauge("blobref_step_in_flight") {
		if time.Now().After(deadline) {
			h.t.Fatalf("messages in flight: got %v, want %v", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// count reads blobref_step_messages_total{step="blob",outcome=outcome}.
func (h *harness) count(outcome string) float64 {
	h.t.Helper()
	return testenv.Counter(h.t, h.reg, "blobref_step_messages_total", `step="blob"`, fmt.Sprintf("outcome=%q", outcome))
}

func TestRunsEachStepOnceAndReemitsOnRepeat(t *testing.T) {
	t.Parallel()
	h := setup(t, step.Options{Concurrency: 4}, nil)
	const n = 50
	for i := range n {
		h.publish(fmt.Sprintf("u%03d", i), []byte(fmt.Sprintf("bytes-%d", i)), fmt.Sprintf("u%03d", i))
	}
	first := h.stored.Await(t, n, timeout)
	if len(first) != n {
		t.Fatalf("got events for %d ids, want %d", len(first), n)
	}
	for id, evs := range first {
		if evs[0].Blob == nil || evs[0].Blob.Key != "uploads/"+id {
			t.Errorf("%s: got blob %+v, want key uploads/%s", id, evs[0].Blob, id)
		}
	}
	// Republish every request as a new message: nothing runs again, every
	// result is emitted again.
	for i := range n {
		h.publish(fmt.Sprintf("u%03d", i), []byte(fmt.Sprintf("bytes-%d", i)), "")
	}
	again := h.stored.Await(t, n, timeout)
	for i := range n {
		id := fmt.Sprintf("u%03d", i)
		if c := h.callsOf(id); c != 1 {
			t.Errorf("%s: effect ran %d times, want 1", id, c)
		}
		if len(again[id]) != 1 || again[id][0].Blob.SHA256 != first[id][0].Blob.SHA256 {
			t.Errorf("%s: re-emitted %d events, want 1 with the recorded result", id, len(again[id]))
		}
	}
	h.AwaitCount(step.Done, n)
	h.AwaitCount(step.Skipped, n)
	if n := h.pg.Count(t, `SELECT count(*) FROM step_markers WHERE step = 'blob'`); n != 50 {
		t.Errorf("markers: got %d, want 50", n)
	}
}

func TestTransientFailuresRetryWithBackoff(t *testing.T) {
	t.Parallel()
	h := setup(t, step.Options{}, func(_ context.Context, ev *events.Event, call int) error {
		if call < 3 {
			return errors.New("store unavailable")
		}
		return nil
	})
	h.publish("flaky", []byte("x"), "flaky")
	h.stored.Await(t, 1, timeout)
	if c := h.callsOf("flaky"); c != 3 {
		t.Errorf("effect ran %d times, want 3", c)
	}
	if got := h.count("retried"); got != 2 {
		t.Errorf("retried: got %v, want 2", got)
	}
}

func TestLastDeliveryIsDeadLettered(t *testing.T) {
	t.Parallel()
	h := setup(t, step.Options{MaxDeliveries: 3}, func(context.Context, *events.Event, int) error {
		return errors.New("always down")
	})
	h.publish("doomed", []byte("x"), "doomed")
	d, body := h.AwaitDeadLetter(events.RequestedSubject("doomed"))
	if d.Reason != events.ReasonRetriesExhausted || d.Step != "blob" || d.Deliveries != 3 {
		t.Errorf("dead letter: got %+v, want retries_exhausted at step blob after 3 deliveries", d)
	}
	if !strings.Contains(d.Error, "always down") {
		t.Errorf("dead letter error: got %q, want the last failure", d.Error)
	}
	if string(body) != "x" {
		t.Errorf("dead letter body: got %q, want the original body", body)
	}
	if c := h.callsOf("doomed"); c != 3 {
		t.Errorf("effect ran %d times, want 3", c)
	}
}

func TestPermanentErrorsAndConflictsAreDeadLettered(t *testing.T) {
	t.Parallel()
	h := setup(t, step.Options{}, func(_ context.Context, ev *events.Event, _ int) error {
		if ev.ID == "bad" {
			return step.Permanent(events.ReasonDigestMismatch, errors.New("sha256 differs"))
		}
		return nil
	})
	h.publish("bad", []byte("x"), "bad")
	if d, _ := h.AwaitDeadLetter(events.RequestedSubject("bad")); d.Reason != events.ReasonDigestMismatch {
		t.Errorf("got reason %q, want %q", d.Reason, events.ReasonDigestMismatch)
	}

	h.publish("same", []byte("original"), "same")
	h.stored.Await(t, 1, timeout)
	h.publish("same", []byte("different"), "same-2")
	d, _ := h.AwaitDeadLetter(events.RequestedSubject("same"))
	if d.Reason != events.ReasonConflict {
		t.Errorf("got reason %q, want conflict", d.Reason)
	}
	if c := h.callsOf("same"); c != 1 {
		t.Errorf("effect ran %d times for the conflicting id, want 1", c)
	}
	h.stored.None(t, 100*time.Millisecond)
}

func TestPoisonDoesNotBlockTheEventsBehindIt(t *testing.T) {
	t.Parallel()
	h := setup(t, step.Options{Concurrency: 1}, nil)
	testenv.PublishMsg(t, h.js, &nats.Msg{Subject: events.RequestedSubject("junk"), Data: []byte("not a cloudevent")})
	h.publish("fine", []byte("x"), "fine")
	d, _ := h.AwaitDeadLetter(events.RequestedSubject("junk"))
	if d.Reason != events.ReasonMalformed {
		t.Errorf("got reason %q, want malformed", d.Reason)
	}
	h.stored.Await(t, 1, timeout)
}

func TestPanicIsRetried(t *testing.T) {
	t.Parallel()
	h := setup(t, step.Options{}, func(_ context.Context, _ *events.Event, call int) error {
		if call == 1 {
			panic("oops")
		}
		return nil
	})
	h.publish("panicky", []byte("x"), "panicky")
	h.stored.Await(t, 1, timeout)
	if c := h.callsOf("panicky"); c != 2 {
		t.Errorf("effect ran %d times, want 2", c)
	}
}

// A side effect that panics in a batch of several (run on goroutines of
// their own, unlike a batch of one's) retries its message; the others are
// recorded once.
func TestPanicInABatchIsRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t, step.Options{BatchSize: 64, BatchWait: 100 * time.Millisecond, Concurrency: 8},
		func(_ context.Context, ev *events.Event, call int) error {
			if ev.ID == "panicky" && call == 1 {
				panic("oops")
			}
			return nil
		})
	var mu sync.Mutex
	largest := 0
	h.inTx = func(items []step.Item[events.Blob]) []error {
		mu.Lock()
		defer mu.Unlock()
		largest = max(largest, len(items))
		return nil
	}
	ids := []string{"a", "b", "panicky", "c", "d"}
	for _, id := range ids {
		h.publish(id, []byte(id), id)
	}
	h.Start()
	h.stored.AwaitIDs(t, len(ids), timeout)
	for _, id := range ids {
		want := 1
		if id == "panicky" {
			want = 2
		}
		if c := h.callsOf(id); c != want {
			t.Errorf("%s: effect ran %d times, want %d", id, c, want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if largest < 2 {
		t.Errorf("the largest batch recorded held %d messages: the test did not run a batch of several", largest)
	}
}

// A panic while a batch is recorded (in the step's InTx) retries the batch,
// while a slower side effect of the same batch is still running: nothing is
// settled twice, and every upload ends recorded once.
func TestPanicWhileRecordingIsRetried(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	h := newHarness(t, step.Options{BatchSize: 64, BatchWait: 200 * time.Millisecond, StragglerWait: 50 * time.Millisecond},
		func(ctx context.Context, ev *events.Event, call int) error {
			if ev.ID == "slow" && call == 1 {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return nil
		})
	var panicked atomic.Bool
	h.inTx = func([]step.Item[events.Blob]) []error {
		if panicked.CompareAndSwap(false, true) {
			close(release) // slow ends while the panic unwinds
			panic("oops in InTx")
		}
		return nil
	}
	h.publish("slow", []byte("s"), "")
	for i := range 5 {
		h.publish(fmt.Sprintf("p%d", i), []byte{byte(i)}, "")
	}
	h.Start()
	h.stored.AwaitIDs(t, 6, timeout)
	h.AwaitCount(step.Done, 6)
	if c := h.pg.Count(t, `SELECT count(*) FROM step_markers`); c != 6 {
		t.Errorf("markers: got %d, want 6", c)
	}
}

func TestShutdownFinishesInFlightWork(t *testing.T) {
	t.Parallel()
	started := make(chan struct{})
	release := make(chan struct{})
	h := setup(t, step.Options{}, func(ctx context.Context, _ *events.Event, _ int) error {
		close(started)
		<-release
		return ctx.Err()
	})
	h.publish("slow", []byte("x"), "slow")
	<-started
	stopped := h.Shutdown() // SIGTERM arrives while the side effect runs
	h.awaitLog("fetching no more")
	close(release)
	<-stopped
	if n := h.pg.Count(t, `SELECT count(*) FROM step_markers WHERE upload_id = 'slow'`); n != 1 {
		t.Errorf("markers after shutdown: got %d, want 1 (the finished side effect is recorded)", n)
	}
	h.stored.Await(t, 1, timeout)
	h.Start() // the cleanup stops it again
}

func TestShutdownHandsBackWorkThatOutlivesTheGrace(t *testing.T) {
	t.Parallel()
	h := setup(t, step.Options{ShutdownGrace: 50 * time.Millisecond}, func(ctx context.Context, _ *events.Event, call int) error {
		if call == 1 {
			<-ctx.Done() // never finishes on its own
			return ctx.Err()
		}
		return nil
	})
	h.publish("stuck", []byte("x"), "stuck")
	deadline := time.Now().Add(timeout)
	for h.callsOf("stuck") == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("effect ran 0 times within %v, want at least 1", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.Stop()
	if n := h.pg.Count(t, `SELECT count(*) FROM step_markers WHERE upload_id = 'stuck'`); n != 0 {
		t.Fatalf("markers: got %d, want 0 (the side effect did not finish)", n)
	}
	h.Start()
	h.stored.Await(t, 1, timeout)
}

// A message whose earlier deliveries never settled (its worker crashed each
// time) is dead-lettered once it is past its last allowed delivery, without
// running its side effect yet again.
func TestCrashLoopingMessageIsDeadLettered(t *testing.T) {
	t.Parallel()
	h := newHarness(t, step.Options{MaxDeliveries: 2, AckWait: time.Second}, nil)
	ctx := context.Background()
	cons, err := h.js.CreateOrUpdateConsumer(ctx, events.StreamName, h.Runner.ConsumerConfig())
	if err != nil {
		t.Fatal(err)
	}
	h.publish("crashy", []byte("x"), "crashy")
	// Two deliveries that die with their worker: fetched, never settled.
	for i := range 2 {
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for range batch.Messages() {
			got++
		}
		if got != 1 {
			t.Fatalf("delivery %d: got %d messages, want 1", i+1, got)
		}
	}
	h.Start()
	d, _ := h.AwaitDeadLetter(events.RequestedSubject("crashy"))
	if d.Reason != events.ReasonRetriesExhausted || d.Deliveries != 3 {
		t.Errorf("dead letter: got %+v, want retries_exhausted on delivery 3", d)
	}
	if c := h.callsOf("crashy"); c != 0 {
		t.Errorf("effect ran %d times, want 0", c)
	}
}

// A side effect longer than AckWait is kept alive by InProgress heartbeats:
// JetStream does not redeliver it meanwhile.
func TestHeartbeatsKeepLongStepsAlive(t *testing.T) {
	t.Parallel()
	h := setup(t, step.Options{AckWait: time.Second}, func(ctx context.Context, _ *events.Event, _ int) error {
		select {
		case <-time.After(2500 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	h.publish("long", []byte("x"), "long")
	h.stored.Await(t, 1, timeout)
	h.AwaitCount(step.Done, 1)
	if c := h.callsOf("long"); c != 1 {
		t.Errorf("effect ran %d times, want 1", c)
	}
	if r := h.count("retried"); r != 0 {
		t.Errorf("retried: got %v, want 0 (no redelivery while the step ran)", r)
	}
}

// A batch settles each message on its own: one message refused inside the
// batch's transaction, one failing for good, one failing once and a copy of
// an upload twice in the batch do not hold back the others, and every side
// effect runs once.
func TestBatchSettlesEachMessageOnItsOwn(t *testing.T) {
	t.Parallel()
	h := newHarness(t, step.Options{BatchSize: 64, BatchWait: 100 * time.Millisecond, Concurrency: 8},
		func(_ context.Context, ev *events.Event, call int) error {
			switch {
			case ev.ID == "bad":
				return step.Permanent(events.ReasonDigestMismatch, errors.New("sha256 differs"))
			case ev.ID == "flaky" && call == 1:
				return errors.New("store unavailable")
			}
			return nil
		})
	var mu sync.Mutex
	largest, refusedOnce := 0, false
	h.inTx = func(items []step.Item[events.Blob]) []error {
		mu.Lock()
		defer mu.Unlock()
		largest = max(largest, len(items))
		errs := make([]error, len(items))
		for i, it := range items {
			if it.Event.ID == "refused" {
				refusedOnce = true
				errs[i] = step.Conflict("refused by the step")
			}
		}
		return errs
	}
	const n = 40
	for i := range n {
		h.publish(fmt.Sprintf("u%03d", i), []byte(fmt.Sprintf("bytes-%d", i)), "")
	}
	for _, id := range []string{"bad", "flaky", "refused", "twice", "twice"} {
		h.publish(id, []byte(id), "")
	}
	h.Start()

	if d, _ := h.AwaitDeadLetter(events.RequestedSubject("refused")); d.Reason != events.ReasonConflict {
		t.Errorf("refused: got reason %q, want conflict", d.Reason)
	}
	if d, _ := h.AwaitDeadLetter(events.RequestedSubject("bad")); d.Reason != events.ReasonDigestMismatch {
		t.Errorf("bad: got reason %q, want digest_mismatch", d.Reason)
	}
	got := h.stored.AwaitIDs(t, n+2, timeout) // the 40, flaky and twice (whose second copy re-emits too)
	for _, id := range []string{"flaky", "twice", "u000", "u039"} {
		if len(got[id]) == 0 {
			t.Errorf("%s: no blob_stored event", id)
		}
	}
	h.AwaitCount(step.Done, n+2)
	h.AwaitCount(step.Skipped, 1) // the second copy of twice, redelivered
	for i := range n {
		if c := h.callsOf(fmt.Sprintf("u%03d", i)); c != 1 {
			t.Errorf("u%03d: effect ran %d times, want 1", i, c)
		}
	}
	if c := h.callsOf("twice"); c != 1 {
		t.Errorf("twice: effect ran %d times, want 1", c)
	}
	if c := h.callsOf("flaky"); c != 2 {
		t.Errorf("flaky: effect ran %d times, want 2", c)
	}
	if n := h.pg.Count(t, `SELECT count(*) FROM step_markers WHERE upload_id IN ('refused', 'bad')`); n != 0 {
		t.Errorf("markers of refused and bad: got %d, want 0", n)
	}
	if n := h.pg.Count(t, `SELECT count(*) FROM step_markers`); n != 42 {
		t.Errorf("markers: got %d, want 42", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if !refusedOnce || largest < 10 {
		t.Errorf("InTx saw batches of at most %d (refused seen: %v), want batches of many", largest, refusedOnce)
	}
}

// A runner that starts while JetStream is down waits for it instead of
// ending: a restart or an election at start-up is no reason to crash.
func TestRunWaitsForJetStreamAtStart(t *testing.T) {
	t.Parallel()
	h := newHarness(t, step.Options{}, nil)
	h.nats.Shutdown()
	h.Start()
	h.awaitLog("consumer not created yet, retrying") // it runs, and waits
	h.nats.Restart()
	h.publish("late", []byte("x"), "late")
	h.stored.Await(t, 1, timeout)
}

// At most MaxBatches batches run at once; while they run, the messages
// that arrive wait and go on together, as one batch, when a worker is free.
// (One pull lasts the whole test: a pull that ended while the messages
// arrive would split them between two, whatever the workers do.)
func TestBatchesGrowWhileWorkersAreBusy(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var started atomic.Int32
	h := newHarness(t, step.Options{BatchSize: 64, MaxInFlight: 128, BatchWait: time.Millisecond, FetchWait: time.Minute},
		holding(release, &started, func(id string) bool { return strings.HasPrefix(id, "slow") }))
	if got := (step.Options{BatchSize: 64, MaxInFlight: 128}).MaxBatches(); got != 2 {
		t.Fatalf("MaxBatches: got %d, want 2", got)
	}
	sizes := h.batchSizes()
	h.Start()
	for i := range 2 { // two batches of one, both held by their side effect
		h.publish(fmt.Sprintf("slow%d", i), []byte("x"), "")
		awaitStarted(t, &started, int32(i+1))
	}
	// Each alone: published once the one before it is in the runner's
	// hands, with nothing pending behind it. Without busy workers, each
	// would be a batch of its own.
	for i := range 10 {
		h.publish(fmt.Sprintf("fast%d", i), []byte("y"), "")
		h.awaitInFlight(float64(2 + i + 1))
	}
	if n := started.Load(); n != 2 {
		t.Errorf("side effects started while both workers were busy: got %d, want 2", n)
	}
	close(release)
	h.stored.Await(t, 12, timeout)
	if got := sizes(); !slices.Contains(got, 10) {
		t.Errorf("batch sizes recorded: %v, want the ten that waited together in one", got)
	}
}

// One slow side effect (a large upload) does not hold the rest of its
// batch: the others are recorded, published and acked once StragglerWait
// has passed, and the slow one on its own when it ends.
func TestSlowSideEffectDoesNotHoldItsBatch(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	h := newHarness(t, step.Options{BatchSize: 64, BatchWait: 200 * time.Millisecond, StragglerWait: 100 * time.Millisecond, Concurrency: 8},
		func(ctx context.Context, ev *events.Event, _ int) error {
			if ev.ID == "slow" {
				select {
				case <-release:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		})
	var mu sync.Mutex
	var groups [][]string
	h.inTx = func(items []step.Item[events.Blob]) []error {
		var ids []string
		for _, it := range items {
			ids = append(ids, it.Event.ID)
		}
		mu.Lock()
		groups = append(groups, ids)
		mu.Unlock()
		return nil
	}
	const n = 20
	h.publish("slow", []byte("big"), "")
	for i := range n {
		h.publish(fmt.Sprintf("f%02d", i), []byte{byte(i)}, "")
	}
	h.Start()

	// slow runs until released: all the others get through before it.
	got := h.stored.AwaitIDs(t, n, timeout)
	if len(got["slow"]) != 0 {
		t.Fatalf("slow emitted before its side effect ended")
	}
	h.AwaitCount(step.Done, n)
	mu.Lock()
	before := slices.Concat(groups...)
	mu.Unlock()
	close(release)
	if got := h.stored.AwaitIDs(t, 1, timeout); len(got["slow"]) != 1 {
		t.Fatalf("after the release got %v, want slow's blob_stored", got)
	}
	h.AwaitCount(step.Done, n+1)
	if c := h.pg.Count(t, `SELECT count(*) FROM step_markers`); c != n+1 {
		t.Errorf("markers: got %d, want %d", c, n+1)
	}
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(before)
	if len(before) != n || slices.Contains(before, "slow") {
		t.Errorf("recorded before the release: %v, want the %d fast uploads", before, n)
	}
	if last := groups[len(groups)-1]; !slices.Equal(last, []string{"slow"}) {
		t.Errorf("recorded groups %v, want slow alone, last", groups)
	}
}

// A message with nothing pending behind it goes at once: it does not wait
// BatchWait for company that is not coming, nor for its pull to end. (With
// an hour of each, a runner that waited would not finish within the
// test's deadline.)
func TestLoneMessageDoesNotWaitForItsBatch(t *testing.T) {
	t.Parallel()
	h := setup(t, step.Options{BatchSize: 64, BatchWait: time.Hour, FetchWait: time.Hour}, nil)
	for i := range 3 {
		id := fmt.Sprintf("lone%d", i)
		h.publish(id, []byte(id), id)
		h.stored.Await(t, 1, timeout)
	}
	h.AwaitCount(step.Done, 3)
}

// AfterRecord runs once the marker exists and before the event is emitted,
// again for a republished event whose marker exists; its error is logged
// and the step still succeeds.
func TestAfterRecordRunsAfterTheMarker(t *testing.T) {
	t.Parallel()
	h := newHarness(t, step.Options{}, nil)
	var mu sync.Mutex
	runs := map[string]int{}
	h.after = func(ctx context.Context, ev *events.Event) error {
		var markers int
		err := h.pg.Pool.QueryRow(ctx, `SELECT count(*) FROM step_markers WHERE step = 'blob' AND upload_id = $1`, ev.ID).Scan(&markers)
		if err != nil || markers != 1 {
			t.Errorf("AfterRecord of %s: %d markers (%v), want 1", ev.ID, markers, err)
		}
		mu.Lock()
		defer mu.Unlock()
		if got := h.emittedFor(ctx, ev.ID); got != runs[ev.ID] {
			t.Errorf("AfterRecord of %s: %d events emitted before it, want %d (it runs before the emit)", ev.ID, got, runs[ev.ID])
		}
		runs[ev.ID]++
		return errors.New("cannot clean up")
	}
	h.Start()
	h.publish("a1", []byte("bytes"), "a1")
	h.stored.Await(t, 1, timeout)
	h.publish("a1", []byte("bytes"), "")
	h.stored.Await(t, 1, timeout)
	h.AwaitCount(step.Done, 1)
	h.AwaitCount(step.Skipped, 1)
	mu.Lock()
	defer mu.Unlock()
	if runs["a1"] != 2 {
		t.Errorf("AfterRecord runs: got %d, want 2 (done, then skipped)", runs["a1"])
	}
	h.awaitLog("cannot clean up")
}

// emittedFor is how many blob_stored events of id UPLOADS holds.
func (h *harness) emittedFor(ctx context.Context, id string) int {
	subject := events.BlobStoredSubject(id)
	s, err := h.js.Stream(ctx, events.StreamName)
	if err != nil {
		h.t.Errorf("stream: %v", err)
		return -1
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		h.t.Errorf("stream info: %v", err)
		return -1
	}
	return int(info.State.Subjects[subject])
}

// While another batch runs, a message with nothing pending behind it waits
// up to BatchWait for company even though a worker is free: each batch
// costs a claim and a transaction however small it is, so at a moderate
// load the messages that arrive one by one go on together. (BatchWait is an
// hour: only a full batch goes before the slow one ends.)
func TestLoneMessagesWaitForCompanyWhileAnotherBatchRuns(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var started atomic.Int32
	h := newHarness(t, step.Options{BatchSize: 10, MaxInFlight: 40, BatchWait: time.Hour, FetchWait: time.Minute},
		holding(release, &started, func(id string) bool { return id == "slow" }))
	if got := (step.Options{BatchSize: 10, MaxInFlight: 40}).MaxBatches(); got < 2 {
		t.Fatalf("MaxBatches: got %d, want a free worker besides the slow batch's", got)
	}
	sizes := h.batchSizes()
	h.Start()
	// Alone, with nothing running: it goes at once.
	h.publish("slow", []byte("x"), "")
	awaitStarted(t, &started, 1)
	for i := range 10 {
		h.publish(fmt.Sprintf("fast%d", i), []byte("y"), "")
		if i < 9 { // the tenth fills the batch, which goes
			h.awaitInFlight(float64(1 + i + 1))
		}
	}
	// The ten went on as one full batch while slow still ran.
	h.stored.Await(t, 10, timeout)
	close(release)
	h.stored.Await(t, 1, timeout)
	if got, want := sizes(), []int{10, 1}; !slices.Equal(got, want) {
		t.Errorf("batch sizes recorded: %v, want %v (the ten that arrived one by one together, then slow)", got, want)
	}
	// What blobref_step_batch_messages tells an operator: two batches, of 1
	// (slow, handed over first) and 10.
	count, total := testenv.Histogram(t, h.reg, "blobref_step_batch_messages")
	if count != 2 || total != 11 {
		t.Errorf("blobref_step_batch_messages: %v batches of %v messages in all, want 2 of 11", count, total)
	}
}
