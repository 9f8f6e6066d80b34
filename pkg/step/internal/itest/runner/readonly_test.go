package runner_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/steptest"
)

// readOnlyRig runs a ReadOnly step whose result says which run of its side
// effect produced it (the blob's content type is "run-<n>"), and whose
// InTx writes one row per item it is given: what the markers recorded, and
// how often the step's own write ran, can both be read back.
type readOnlyRig struct {
	*steptest.Harness[events.Blob]
	t     *testing.T
	pg    *testenv.Postgres
	reg   *prometheus.Registry
	fail  atomic.Bool // the side effect fails, for good
	mu    sync.Mutex
	calls map[string]int
	hold  func(id string) // called by each run of the side effect, if set
}

func newReadOnlyRig(t *testing.T, opts step.Options) *readOnlyRig {
	t.Helper()
	r := &readOnlyRig{t: t, pg: testenv.StartPostgres(t), reg: prometheus.NewRegistry(), calls: map[string]int{}}
	m, err := step.NewMetrics(r.reg)
	if err != nil {
		t.Fatal(err)
	}
	opts.Metrics = m
	if _, err := r.pg.Pool.Exec(context.Background(), `CREATE TABLE written (id text, content_type text)`); err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	_, js := n.Connect()
	s := step.Step[events.Blob]{
		Name:     "check",
		Consumes: events.TypeRequested,
		Durable:  events.BlobWriterConsumer.Durable,
		ReadOnly: true,
		Effect: func(_ context.Context, ev *events.Event) (events.Blob, error) {
			r.mu.Lock()
			r.calls[ev.ID]++
			run := r.calls[ev.ID]
			r.mu.Unlock()
			if r.hold != nil {
				r.hold(ev.ID)
			}
			if r.fail.Load() {
				return events.Blob{}, step.Permanent(events.ReasonDigestMismatch, errors.New("the check fails"))
			}
			return events.Blob{Key: "uploads/" + ev.ID, Size: int64(len(ev.Data)), SHA256: ev.SHA256,
				ContentType: fmt.Sprintf("run-%d", run)}, nil
		},
		InTx: func(ctx context.Context, tx pgx.Tx, items []step.Item[events.Blob]) ([]error, error) {
			for _, it := range items {
				if _, err := tx.Exec(ctx, `INSERT INTO written VALUES ($1, $2)`, it.Event.ID, it.Result.ContentType); err != nil {
					return nil, err
				}
			}
			return nil, nil
		},
		Emit: func(ev *events.Event, b events.Blob) (*events.Event, error) {
			return events.NewBlobStored(ev, b, "/test")
		},
	}
	r.Harness = steptest.New(t, js, r.pg.Pool, s, opts)
	r.Timeout = timeout
	return r
}

func (r *readOnlyRig) event(id string) *events.Event {
	r.t.Helper()
	ev, err := events.NewRequested(events.Request{ID: id, Source: "/test", Subject: "users/" + id, ContentType: "text/plain", Data: []byte(id)})
	if err != nil {
		r.t.Fatal(err)
	}
	return ev
}

func (r *readOnlyRig) publish(id, msgID string) {
	r.t.Helper()
	r.Publish(r.event(id), msgID)
}

func (r *readOnlyRig) callsOf(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls[id]
}

// handle has the step handle one new message of upload id, alone, and
// checks what became of it: its outcome, the result it emitted and how
// often the side effect of id has run so far.
func (r *readOnlyRig) handle(what, id string, want step.Kind, wantResult string, wantCalls int) {
	r.t.Helper()
	res := r.Handle(r.event(id))
	got := ""
	if res.Emitted != nil && res.Emitted.Blob != nil {
		got = res.Emitted.Blob.ContentType
	}
	if res.Outcome.Kind != want || got != wantResult || r.callsOf(id) != wantCalls {
		r.t.Errorf("%s: got %s emitting %q, side effect run %d times; want %s emitting %q, run %d times",
			what, res.Outcome.Kind, got, r.callsOf(id), want, wantResult, wantCalls)
	}
}

// A ReadOnly step runs its side effect without a claim or a marker look-up,
// so the first repeat of a done step runs it again; but only the first run
// is recorded, the step's own write happens once, and every repeat
// re-emits the recorded result. Once a repeat was met, the runner looks
// markers up first (a replay runs no side effect), until a look-up finds
// none. A repeat whose side effect fails is skipped all the same, because
// the step is done; a new upload whose side effect fails is dead-lettered.
func TestReadOnlyStepRecordsOneRunAndReemitsIt(t *testing.T) {
	t.Parallel()
	r := newReadOnlyRig(t, step.Options{})
	r.Start()
	r.handle("a, new", "a", step.Done, "run-1", 1)
	r.handle("a, repeated: run unclaimed", "a", step.Skipped, "run-1", 2)
	r.handle("a, repeated again: looked up first", "a", step.Skipped, "run-1", 2)
	r.handle("b, new: looked up first, none found", "b", step.Done, "run-1", 1)
	r.handle("b, repeated: run unclaimed again", "b", step.Skipped, "run-1", 2)
	r.handle("c, new: looked up first, none found", "c", step.Done, "run-1", 1)
	r.fail.Store(true)
	r.handle("a, repeated while failing: unclaimed, then looked up", "a", step.Skipped, "run-1", 3)
	r.handle("d, new while failing: looked up first, then run", "d", step.Dead, "", 1)
	r.handle("c, repeated while failing: unclaimed, then looked up", "c", step.Skipped, "run-1", 2)

	if w := r.pg.Map(t, `SELECT id, content_type FROM written`); len(w) != 3 || w["a"] != "run-1" || w["b"] != "run-1" || w["c"] != "run-1" {
		t.Errorf("rows the step wrote: got %v, want one for each of a, b and c, from its first run", w)
	}
	if n := r.pg.Count(t, `SELECT count(*) FROM written`); n != 3 {
		t.Errorf("rows the step wrote: got %d, want 3", n)
	}
	if e := testenv.Counter(t, r.reg, "blobref_step_effects_total", `step="check"`); e != 3 {
		t.Errorf("side effects counted: got %v, want 3 (those recorded)", e)
	}
	if m := r.pg.Count(t, `SELECT count(*) FROM step_markers WHERE step = 'check'`); m != 3 {
		t.Errorf("markers: got %d, want 3", m)
	}
}

// Two copies of one upload in two batches that run at once both run a
// ReadOnly step's side effect (no claim keeps them apart), and the markers'
// primary key decides: one is done, the other skipped, the step's own
// write runs once, and both copies emit the recorded result.
func TestReadOnlyStepRunsAtOnceRecordsOnce(t *testing.T) {
	t.Parallel()
	// Batches of one, four at once: the two copies are two batches.
	r := newReadOnlyRig(t, step.Options{BatchSize: 1, MaxInFlight: 4, Concurrency: 4})
	both := make(chan struct{})
	var started atomic.Int32
	r.hold = func(string) {
		if started.Add(1) == 2 {
			close(both)
		}
		select {
		case <-both:
		case <-time.After(timeout):
		}
	}
	emitted := r.Emitted()
	r.publish("twin", "twin-1")
	r.publish("twin", "twin-2")
	r.Start()
	got := emitted.AwaitIDs(t, 1, timeout)
	select {
	case <-both:
	default:
		t.Fatalf("the two copies' side effects did not run at once (%d started)", started.Load())
	}
	r.AwaitCount(step.Done, 1)
	r.AwaitCount(step.Skipped, 1)
	evs := got["twin"]
	for len(evs) < 2 {
		more := emitted.Await(t, 1, timeout)
		evs = append(evs, more["twin"]...)
	}
	if evs[0].Blob.ContentType != evs[1].Blob.ContentType {
		t.Errorf("the copies emitted results %q and %q, want the one recorded", evs[0].Blob.ContentType, evs[1].Blob.ContentType)
	}
	if w := r.pg.Count(t, `SELECT count(*) FROM written WHERE id = 'twin'`); w != 1 {
		t.Errorf("rows the step wrote: got %d, want 1", w)
	}
	var recorded string
	if err := r.pg.Pool.QueryRow(context.Background(),
		`SELECT result->>'contentType' FROM step_markers WHERE step = 'check' AND upload_id = 'twin'`).Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if recorded != evs[0].Blob.ContentType {
		t.Errorf("marker records %q, the copies emitted %q", recorded, evs[0].Blob.ContentType)
	}
}
