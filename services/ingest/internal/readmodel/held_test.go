package readmodel_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/ingest/internal/readmodel"
)

// heldRig is a projector over fresh streams and a schema whose read model
// notes each row it writes (an insert, or an update that changed the row)
// in view_writes.
type heldRig struct {
	pg *testenv.Postgres
	js jetstream.JetStream
}

func newHeldRig(t *testing.T) heldRig {
	t.Helper()
	pg, js := start(t)
	if _, err := pg.Pool.Exec(t.Context(), `CREATE TABLE view_writes (id text, op text);
		CREATE FUNCTION note_view_write() RETURNS trigger LANGUAGE plpgsql AS
			$$ BEGIN INSERT INTO view_writes VALUES (NEW.id, TG_OP); RETURN NEW; END $$;
		CREATE TRIGGER note_view_write AFTER INSERT OR UPDATE ON ingest_upload_view
			FOR EACH ROW EXECUTE FUNCTION note_view_write()`); err != nil {
		t.Fatal(err)
	}
	return heldRig{pg, js}
}

func (r heldRig) run(t *testing.T, hold time.Duration) (stop func()) {
	t.Helper()
	return runProjectorWith(t, &readmodel.Projector{Pool: r.pg.Pool, JS: r.js, Logger: testenv.Logger(t), BatchSize: 3, Hold: hold})
}

// writes is how many times the read model wrote each upload's row.
func (r heldRig) writes(t *testing.T) map[string]string {
	t.Helper()
	return r.pg.Map(t, `SELECT id, string_agg(op, ',') FROM view_writes GROUP BY id`)
}

// awaitHeld waits until the blob_stored consumer has delivered everything
// and n messages await their acks: held.
func (r heldRig) awaitHeld(t *testing.T, n int) {
	t.Helper()
	awaitConsumer(t, r.js, events.IngestStoredConsumer, n, time.Now().Add(within))
}

// An upload's blob_stored event waits for its completed event or dead
// letter, and one statement writes the row once with both; the read model
// ends as it would have without the wait.
func TestStoredWaitsForItsCompletion(t *testing.T) {
	t.Parallel()
	r := newHeldRig(t)
	r.run(t, time.Hour) // only the completions release them
	var ps []pipeline
	for i := range 6 {
		p := newPipeline(t, fmt.Sprintf("held-%d", i), "alice")
		ps = append(ps, p)
		testenv.Publish(t, r.js, p.stored, "")
	}
	r.awaitHeld(t, len(ps))
	var ids []string
	for i, p := range ps {
		ids = append(ids, p.req.ID)
		if i%2 == 0 {
			testenv.Publish(t, r.js, p.completed, "")
		} else { // refused by refwriter
			deadLetter(t, r.js, p.stored, events.StepRef, events.ReasonConflict)
		}
	}
	awaitDrained(t, r.js)
	writes := r.writes(t)
	states := r.pg.Map(t, `SELECT id, concat_ws(',', stored_at IS NOT NULL, completed_at IS NOT NULL, ref IS NOT NULL, dead_reason)
		FROM ingest_upload_view`)
	for i, id := range ids {
		if got := writes[id]; got != "INSERT" {
			t.Errorf("%s: row written %q, want once (INSERT)", id, got)
		}
		want := map[int]string{0: "t,t,t", 1: "t,f,f," + events.ReasonConflict}[i%2]
		if states[id] != want {
			t.Errorf("%s: got %s, want %s", id, states[id], want)
		}
	}
}

// A blob_stored event whose completion does not come (refwriter is down)
// is applied once held for Hold; the completion, when it comes, completes
// the row.
func TestStoredAloneIsAppliedAfterTheHold(t *testing.T) {
	t.Parallel()
	r := newHeldRig(t)
	r.run(t, 100*time.Millisecond)
	p := newPipeline(t, "alone", "alice")
	testenv.Publish(t, r.js, p.stored, "")
	r.pg.AwaitCount(t, within, 1, `SELECT count(*) FROM ingest_upload_view WHERE id = $1 AND stored_at IS NOT NULL`, p.req.ID)
	awaitDrained(t, r.js)
	testenv.Publish(t, r.js, p.completed, "")
	r.pg.AwaitCount(t, within, 1, `SELECT count(*) FROM ingest_upload_view WHERE id = $1 AND completed_at IS NOT NULL
		AND stored_at IS NOT NULL AND ref IS NOT NULL`, p.req.ID)
	if got := r.writes(t)[p.req.ID]; got != "INSERT,UPDATE" {
		t.Errorf("row written %q, want INSERT,UPDATE", got)
	}
}

// The read model holds a bounded number of facts: past four batches (12
// here) the oldest are applied without waiting for their completions.
func TestHeldFactsAreBounded(t *testing.T) {
	t.Parallel()
	r := newHeldRig(t)
	r.run(t, time.Hour)
	var ps []pipeline
	for i := range 30 {
		p := newPipeline(t, fmt.Sprintf("many-%d", i), "alice")
		ps = append(ps, p)
		testenv.Publish(t, r.js, p.stored, "")
	}
	deadline := time.Now().Add(within)
	for r.pg.Count(t, `SELECT count(*) FROM ingest_upload_view`) < 30-12 {
		if time.Now().After(deadline) {
			t.Fatalf("rows: %d, want at least %d applied while the rest are held",
				r.pg.Count(t, `SELECT count(*) FROM ingest_upload_view`), 30-12)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range ps {
		testenv.Publish(t, r.js, p.completed, "")
	}
	awaitDrained(t, r.js)
	if n := r.pg.Count(t, `SELECT count(*) FROM ingest_upload_view WHERE stored_at IS NOT NULL AND completed_at IS NOT NULL`); n != 30 {
		t.Errorf("completed rows: got %d, want 30", n)
	}
}

// What is held when the projector stops is applied and acknowledged, not
// left for a redelivery.
func TestHeldFactsAreAppliedOnShutdown(t *testing.T) {
	t.Parallel()
	r := newHeldRig(t)
	stop := r.run(t, time.Hour)
	for i := range 2 {
		testenv.Publish(t, r.js, newPipeline(t, fmt.Sprintf("stop-%d", i), "alice").stored, "")
	}
	r.awaitHeld(t, 2)
	if n := r.pg.Count(t, `SELECT count(*) FROM ingest_upload_view`); n != 0 {
		t.Fatalf("rows while held: %d, want 0", n)
	}
	stop()
	if n := r.pg.Count(t, `SELECT count(*) FROM ingest_upload_view WHERE stored_at IS NOT NULL`); n != 2 {
		t.Errorf("rows after shutdown: %d, want 2", n)
	}
	awaitDrained(t, r.js)
}
