package refstore_test

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"gocloud.dev/blob"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/steptest"
	"github.com/blobref/blobref/services/refwriter/internal/refstore"
)

// runner is refwriter's step run by the real runner (package steptest)
// over a JetStream server and a Postgres schema of its own, checking blobs
// in a file:// bucket.
type runner struct {
	*steptest.Harness[events.Reference]
	t         *testing.T
	pg        *testenv.Postgres
	bucket    *blob.Bucket
	completed *steptest.Events // what the step emitted: completed events
}

// timeout bounds every wait for the runner.
const timeout = 30 * time.Second

func setupRunner(t *testing.T) *runner {
	t.Helper()
	_, js := testenv.StartNATS(t).Connect()
	r := &runner{t: t, pg: testenv.StartPostgres(t), bucket: openBucket(t, "file://"+t.TempDir())}
	w := &refstore.Writer{Bucket: r.bucket}
	r.Harness = steptest.New(t, js, r.pg.Pool, w.Step(), step.Options{Concurrency: 8})
	r.Timeout = timeout
	r.completed = r.Emitted()
	r.Start()
	return r
}

// xmins returns the xmin of every reference row by id.
func (r *runner) xmins() map[string]string {
	r.t.Helper()
	return r.pg.Map(r.t, `SELECT id, xmin::text FROM upload_refs`)
}

func TestRunnerRecordsEachReferenceOnce(t *testing.T) {
	t.Parallel()
	r := setupRunner(t)
	const (
		n        = 50
		subjects = 5
	)
	evs := make([]*events.Event, n)
	for i := range n {
		id := fmt.Sprintf("u%03d", i)
		data := fmt.Appendf(nil, "bytes of upload %d", i)
		// Later ids have later event times: the current reference of each
		// subject must end on its last id, in whatever order they are handled.
		evs[i] = blobStored(t, id, fmt.Sprintf("users/%d/avatar", i%subjects), t0.Add(time.Duration(i)*time.Second), data)
		putBlob(t, r.bucket, evs[i], data)
		r.Publish(evs[i], id)
	}
	first := r.completed.Await(t, n, timeout)
	for _, ev := range evs {
		got := first[ev.ID]
		if len(got) != 1 {
			t.Errorf("%s: got %d completed events, want 1", ev.ID, len(got))
			continue
		}
		ref := got[0].Ref
		if ref.ID != ev.ID || ref.Subject != ev.Subject || ref.Blob != *ev.Blob || !ref.EventTime.Equal(ev.Time) {
			t.Errorf("%s: got reference %+v, want id, subject, blob %+v and event time %v of the event", ev.ID, *ref, *ev.Blob, ev.Time)
		}
	}
	if got := r.pg.Count(t, `SELECT count(*) FROM upload_refs`); got != n {
		t.Errorf("reference rows: got %d, want %d", got, n)
	}
	if got := r.pg.Count(t, `SELECT count(DISTINCT id) FROM upload_refs`); got != n {
		t.Errorf("distinct reference ids: got %d, want %d", got, n)
	}
	xmins := r.xmins()

	// Republish every event as a new message: completed is emitted again,
	// no row is written again.
	for _, ev := range evs {
		r.Publish(ev, "")
	}
	again := r.completed.Await(t, n, timeout)
	for _, ev := range evs {
		if got := again[ev.ID]; len(got) != 1 || got[0].Ref.Blob != first[ev.ID][0].Ref.Blob {
			t.Errorf("%s: re-emitted %d completed events, want 1 with the recorded reference", ev.ID, len(got))
		}
	}
	if got := r.xmins(); !maps.Equal(got, xmins) {
		t.Errorf("reference rows were rewritten: xmin got %v, want %v", got, xmins)
	}
	if got := r.pg.Count(t, `SELECT count(*) FROM step_markers WHERE step = $1`, events.StepRef); got != n {
		t.Errorf("step markers: got %d, want %d", got, n)
	}
	for s := range subjects {
		subject := fmt.Sprintf("users/%d/avatar", s)
		want := fmt.Sprintf("u%03d", n-subjects+s)
		if cur, err := refstore.Current(context.Background(), r.pg.Pool, testOwner, subject); err != nil || cur != want {
			t.Errorf("current reference of %s: got %q (%v), want %s", subject, cur, err, want)
		}
	}
}

func TestRunnerWaitsForTheBlobAndRefusesAWrongOne(t *testing.T) {
	t.Parallel()
	r := setupRunner(t)
	data := []byte("late bytes")

	// The event overtook the blob: retried until the blob is there.
	late := blobStored(t, "late", "users/1/avatar", t0, data)
	r.Publish(late, late.ID)
	r.AwaitOutcome("late", step.Retried)
	if n := r.pg.Count(t, `SELECT count(*) FROM upload_refs`); n != 0 {
		t.Fatalf("reference rows before the blob exists: got %d, want 0", n)
	}
	putBlob(t, r.bucket, late, data)
	if got := r.completed.Await(t, 1, timeout); len(got["late"]) != 1 {
		t.Errorf("completed: got %v, want late", got)
	}

	// A blob that holds other bytes is never referenced.
	wrong := blobStored(t, "wrong", "users/2/avatar", t0, data)
	putBlob(t, r.bucket, wrong, []byte("truncated"))
	r.Publish(wrong, wrong.ID)
	d := r.AwaitDeadLetters(1)[events.BlobStoredSubject("wrong")]
	if d.Reason != events.ReasonDigestMismatch || d.Subject != events.BlobStoredSubject("wrong") || d.Step != events.StepRef {
		t.Errorf("dead letter: got %+v, want %s of %s at step %s", d, events.ReasonDigestMismatch, events.BlobStoredSubject("wrong"), events.StepRef)
	}
	if n := r.pg.Count(t, `SELECT count(*) FROM upload_refs WHERE id = 'wrong'`); n != 0 {
		t.Errorf("reference rows of wrong: got %d, want 0", n)
	}
	if n := r.pg.Count(t, `SELECT count(*) FROM step_markers WHERE upload_id = 'wrong'`); n != 0 {
		t.Errorf("markers of wrong: got %d, want 0", n)
	}
}

// Events that try to take what is not theirs end as dead letters and leave
// the stores as they were: a blob key of another upload, a time in 2099, and
// another owner's event for an upload already referenced.
func TestRunnerRefusesHostileEvents(t *testing.T) {
	t.Parallel()
	r := setupRunner(t)
	const subject = "users/42/avatar"

	victim := blobStoredBy(t, "alice", "victim", subject, t0, []byte("victim's bytes"))
	putBlob(t, r.bucket, victim, []byte("victim's bytes"))
	r.Publish(victim, victim.ID)
	if got := r.completed.Await(t, 1, timeout); len(got["victim"]) != 1 {
		t.Fatalf("completed: got %v, want victim", got)
	}
	xmins := r.xmins()

	// A blob_stored event of another id that points at the victim's object.
	req, err := events.NewRequested(events.Request{
		ID: "thief", Source: "/test", Owner: "mallory", Subject: subject, ContentType: "image/png", Time: t0.Add(time.Hour),
		DataRef: "nats-object://uploads-staging/thief", SHA256: victim.SHA256,
	})
	if err != nil {
		t.Fatal(err)
	}
	thief, err := events.NewBlobStored(req, *victim.Blob, "/blobref/blobwriter")
	if err != nil {
		t.Fatal(err)
	}
	future := blobStoredBy(t, "mallory", "future", subject, time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), []byte("pinned"))
	putBlob(t, r.bucket, future, []byte("pinned"))
	// The victim's id again, for another owner.
	takeover := blobStoredBy(t, "mallory", "victim", subject, t0.Add(time.Hour), []byte("victim's bytes"))
	for _, ev := range []*events.Event{thief, future, takeover} {
		r.Publish(ev, "")
	}
	dead := r.AwaitDeadLetters(3)
	for id, want := range map[string]string{"thief": events.ReasonInvalid, "future": events.ReasonInvalid, "victim": events.ReasonConflict} {
		if d := dead[events.BlobStoredSubject(id)]; d.Reason != want {
			t.Errorf("%s: dead letter %+v, want reason %s", id, d, want)
		}
	}
	if got := r.xmins(); !maps.Equal(got, xmins) {
		t.Errorf("reference rows: got %v, want only the victim's, untouched (%v)", got, xmins)
	}
	for owner, want := range map[string]string{"alice": "victim", "mallory": ""} {
		if cur, err := refstore.Current(context.Background(), r.pg.Pool, owner, subject); err != nil || cur != want {
			t.Errorf("%s's current reference: got %q (%v), want %q", owner, cur, err, want)
		}
	}
	r.completed.None(t, 100*time.Millisecond)
}
