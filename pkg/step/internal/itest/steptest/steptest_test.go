package steptest_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/steptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Another team's types: a scan of each stored blob, whose verdict another
// of their steps files. Neither is blobref's; both are declared once.
const (
	typeScanned = "io.example.upload.scanned.v1"
	typeFiled   = "io.example.upload.filed.v1"
)

type verdict struct {
	Clean bool `json:"clean"`
}

func init() {
	events.MustRegister(events.EventType{Type: typeScanned, SubjectPrefix: "uploads.scanned.", ContentType: "application/json", Follows: events.TypeBlobStored})
	events.MustRegister(events.EventType{Type: typeFiled, SubjectPrefix: "uploads.filed.", ContentType: "application/json", Follows: typeScanned})
}

// stored builds the blob_stored event of upload id.
func stored(t *testing.T, id string, data []byte) *events.Event {
	t.Helper()
	req, err := events.NewRequested(events.Request{ID: id, Source: "/test", Subject: "users/" + id, ContentType: "text/plain", Data: data})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.NewBlobStored(req, events.Blob{Key: "uploads/" + id, Size: int64(len(data)), SHA256: req.SHA256, ContentType: "text/plain"}, events.SourceBlobWriter)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// A step of another team consumes blobref's blob_stored and emits its own
// type; a second one consumes that and ends the chain. The harness runs
// each under the real runner and reports outcomes and emitted events: a
// first delivery done, a republish skipped and re-emitted, a failure
// retried, a refusal dead-lettered.
func TestStepsOfAnotherTeam(t *testing.T) {
	t.Parallel()
	_, js := testenv.StartNATS(t).Connect()
	pg := testenv.StartPostgres(t)

	var scans atomic.Int32
	scan := steptest.New(t, js, pg.Pool, step.Step[verdict]{
		Name:     "scan",
		Consumes: events.TypeBlobStored,
		Effect: func(_ context.Context, ev *events.Event) (verdict, error) {
			if scans.Add(1) == 2 {
				return verdict{}, errors.New("scanner busy") // the second scan fails once
			}
			if ev.ID == "virus" {
				return verdict{}, step.Permanent(events.ReasonInvalid, errors.New("not scannable"))
			}
			return verdict{Clean: true}, nil
		},
		Emit: func(ev *events.Event, v verdict) (*events.Event, error) {
			data, err := json.Marshal(v)
			if err != nil {
				return nil, err
			}
			return events.Follow(ev, typeScanned, "/example/scanner", data)
		},
	}, step.Options{})
	scan.Start()

	first := scan.Handle(stored(t, "u1", []byte("one")))
	if first.Outcome.Kind != step.Done || len(first.Retries) != 0 || first.Emitted == nil ||
		first.Emitted.Type != typeScanned || string(first.Emitted.Data) != `{"clean":true}` {
		t.Fatalf("first: got %+v, want done with a scanned event of a clean verdict", first)
	}
	again := scan.Handle(stored(t, "u1", []byte("one")))
	if again.Outcome.Kind != step.Skipped || again.Emitted == nil || string(again.Emitted.Data) != `{"clean":true}` {
		t.Errorf("republished: got %+v, want skipped with the recorded verdict emitted again", again)
	}
	retried := scan.Handle(stored(t, "u2", []byte("two")))
	if retried.Outcome.Kind != step.Done || len(retried.Retries) != 1 || retried.Retries[0].Err == nil {
		t.Errorf("u2: got %+v, want done after one retry", retried)
	}
	dead := scan.Handle(stored(t, "virus", []byte("x")))
	if dead.Outcome.Kind != step.Dead || dead.DeadLetter == nil || dead.DeadLetter.Reason != events.ReasonInvalid ||
		dead.DeadLetter.Step != "scan" || dead.Emitted != nil {
		t.Errorf("virus: got %+v, want dead-lettered by scan as invalid, nothing emitted", dead)
	}
	if c, err := js.Consumer(t.Context(), events.StreamName, "scan"); err != nil || c.CachedInfo().Config.FilterSubject != "uploads.blob.stored.>" {
		t.Errorf("durable consumer: got %v, want one named after the step on blob_stored's subjects", err)
	}

	// The terminal step reads what the first emitted, on its own durable.
	var filed atomic.Int32
	file := steptest.New(t, js, pg.Pool, step.Step[int]{
		Name:     "file",
		Consumes: typeScanned,
		Durable:  "filing-cabinet",
		Effect: func(context.Context, *events.Event) (int, error) {
			return int(filed.Add(1)), nil
		},
	}, step.Options{})
	file.Start()
	res := file.AwaitOutcome("u1", step.Done)
	if res.Subject != "uploads.scanned.u1" {
		t.Errorf("filed: got %+v, want the scanned event of u1", res)
	}
	file.AwaitOutcome("u2", step.Done)
	file.AwaitCount(step.Skipped, 1) // u1's scanned event, emitted twice
	file.Emitted().None(t, 0)
	if n := filed.Load(); n != 2 {
		t.Errorf("filings: got %d, want 2 (one per upload)", n)
	}
	if n := pg.Count(t, `SELECT count(*) FROM step_markers WHERE step = 'file'`); n != 2 {
		t.Errorf("markers of file: got %d, want 2", n)
	}
}

// Work runs a step in process, on Postgres alone: the first time it runs
// the effect and records it with the step's InTx, after that it finds the
// marker; a refusal of InTx leaves nothing behind.
func TestWork(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	ctx := context.Background()
	if _, err := pg.Pool.Exec(ctx, `CREATE TABLE seen (id text PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	var effects atomic.Int32
	s := step.Step[verdict]{
		Name:     "scan",
		Consumes: events.TypeBlobStored,
		Effect: func(context.Context, *events.Event) (verdict, error) {
			effects.Add(1)
			return verdict{Clean: true}, nil
		},
		InTx: func(ctx context.Context, tx pgx.Tx, items []step.Item[verdict]) ([]error, error) {
			errs := make([]error, len(items))
			for i, it := range items {
				if it.Event.ID == "refused" {
					errs[i] = step.Conflict("refused")
					continue
				}
				if _, err := tx.Exec(ctx, `INSERT INTO seen VALUES ($1)`, it.Event.ID); err != nil {
					return nil, err
				}
			}
			return errs, nil
		},
		Emit: func(ev *events.Event, v verdict) (*events.Event, error) {
			return events.Follow(ev, typeScanned, "/example/scanner", []byte(`{"clean":true}`))
		},
	}
	ev := stored(t, "w1", []byte("w"))
	for i, want := range []step.Kind{step.Done, step.Skipped} {
		got, err := steptest.Work(ctx, pg.Pool, s, ev)
		if err != nil || got.Kind != want || !got.Result.Clean || got.Emitted == nil || got.Emitted.Type != typeScanned {
			t.Errorf("Work %d: got %+v, %v; want %s with a clean verdict and a scanned event", i+1, got, err, want)
		}
	}
	if n := effects.Load(); n != 1 {
		t.Errorf("effects: got %d, want 1", n)
	}
	if _, err := steptest.Work(ctx, pg.Pool, s, stored(t, "refused", []byte("r"))); !isConflict(err) {
		t.Errorf("refused: got %v, want a conflict", err)
	}
	if n := pg.Count(t, `SELECT count(*) FROM step_markers WHERE upload_id = 'refused'`) + pg.Count(t, `SELECT count(*) FROM seen WHERE id = 'refused'`); n != 0 {
		t.Errorf("refused: %d rows left behind, want none", n)
	}
}

func isConflict(err error) bool {
	var perm *step.PermanentError
	return errors.As(err, &perm) && perm.Reason == events.ReasonConflict
}
