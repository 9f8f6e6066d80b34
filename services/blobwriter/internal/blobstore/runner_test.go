package blobstore_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/claimcheck"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/steptest"
	"github.com/blobref/blobref/services/blobwriter/internal/blobstore"
)

// runner is blobwriter's step run by the real runner (package steptest)
// over a JetStream server and a Postgres schema of its own, writing to a
// counting file:// bucket.
type runner struct {
	*steptest.Harness[events.Blob]
	pg     *testenv.Postgres
	bucket *countingBucket
	stored *steptest.Events // what the step emitted: blob_stored events
}

// timeout bounds every wait for the runner.
const timeout = 30 * time.Second

func setupRunner(t *testing.T) *runner {
	t.Helper()
	_, js := testenv.StartNATS(t).Connect()
	r := &runner{
		pg:     testenv.StartPostgres(t),
		bucket: &countingBucket{Bucket: openBucket(t, "file://"+t.TempDir())},
	}
	w := &blobstore.Writer{Bucket: r.bucket, Claims: claimcheck.ObjectClaims{JS: js}}
	r.Harness = steptest.New(t, js, r.pg.Pool, w.Step(), step.Options{Concurrency: 8})
	r.Timeout = timeout
	r.stored = r.Emitted()
	r.Start()
	return r
}

func TestRunnerWritesEachBlobOnce(t *testing.T) {
	t.Parallel()
	r := setupRunner(t)
	const n = 50
	reqs := make([]*events.Event, n)
	for i := range n {
		reqs[i] = request(t, fmt.Sprintf("u%03d", i), fmt.Appendf(nil, "bytes of upload %d", i))
		r.Publish(reqs[i], reqs[i].ID)
	}
	first := r.stored.Await(t, n, timeout)
	if len(first) != n {
		t.Fatalf("got blob_stored events for %d ids, want %d", len(first), n)
	}
	for _, req := range reqs {
		evs := first[req.ID]
		want := events.Blob{Key: "uploads/" + req.ID, Size: int64(len(req.Data)), SHA256: req.SHA256, ContentType: "image/png"}
		if len(evs) != 1 || *evs[0].Blob != want {
			t.Errorf("%s: got %d events, the first with %+v; want 1 with %+v", req.ID, len(evs), evs[0].Blob, want)
		}
	}
	if w := r.bucket.writes.Load(); w != n {
		t.Errorf("writes after the first round: got %d, want %d", w, n)
	}

	// Republish every request as a new message: each result is emitted again,
	// nothing is written again.
	for _, req := range reqs {
		r.Publish(req, "")
	}
	again := r.stored.Await(t, n, timeout)
	for _, req := range reqs {
		if evs := again[req.ID]; len(evs) != 1 || *evs[0].Blob != *first[req.ID][0].Blob {
			t.Errorf("%s: re-emitted %d events, want 1 with the recorded result %+v", req.ID, len(evs), *first[req.ID][0].Blob)
		}
	}
	if w := r.bucket.writes.Load(); w != n {
		t.Errorf("writes after republishing: got %d, want %d", w, n)
	}
	if got := r.pg.Count(t, `SELECT count(*) FROM step_markers WHERE step = $1`, events.StepBlob); got != n {
		t.Errorf("step markers: got %d, want %d", got, n)
	}
	if got := len(keys(t, r.bucket.Bucket)); got != n {
		t.Errorf("objects: got %d, want %d", got, n)
	}
	for _, req := range reqs {
		if stored, err := r.bucket.ReadAll(context.Background(), "uploads/"+req.ID); err != nil || !bytes.Equal(stored, req.Data) {
			t.Errorf("%s: object holds %q (%v), want %q", req.ID, stored, err, req.Data)
		}
	}
}

func TestRunnerDeadLettersWhatNoRetryCanFix(t *testing.T) {
	t.Parallel()
	r := setupRunner(t)

	other := []byte("stored by someone else")
	put(t, r.bucket.Bucket, "uploads/taken", other, digest(other))
	conflict := request(t, "taken", []byte("mine"))

	lying := request(t, "lying", []byte("the bytes"))
	lying.SHA256 = digest([]byte("not the bytes"))

	missing := requestOf(t, events.Request{ID: "unstaged", ContentType: "image/png",
		DataRef: "nats-object://uploads-staging/unstaged", SHA256: digest([]byte("x"))})

	good := request(t, "good", []byte("fine"))
	for _, ev := range []*events.Event{conflict, lying, missing, good} {
		r.Publish(ev, ev.ID)
	}

	dead := r.AwaitDeadLetters(3)
	for _, tt := range []struct {
		id, reason string
	}{
		{"taken", events.ReasonConflict},
		{"lying", events.ReasonDigestMismatch},
		{"unstaged", events.ReasonClaimMissing},
	} {
		d, ok := dead[events.RequestedSubject(tt.id)]
		if !ok || d.Reason != tt.reason || d.Step != events.StepBlob {
			t.Errorf("%s: got dead letter %+v (found %v), want reason %s at step %s", tt.id, d, ok, tt.reason, events.StepBlob)
		}
	}
	if evs := r.stored.Await(t, 1, timeout); len(evs["good"]) != 1 {
		t.Errorf("got blob_stored for %v, want good", evs)
	}
	if got := r.pg.Count(t, `SELECT count(*) FROM step_markers`); got != 1 {
		t.Errorf("step markers: got %d, want 1 (only good)", got)
	}
	if stored, err := r.bucket.ReadAll(context.Background(), "uploads/taken"); err != nil || !bytes.Equal(stored, other) {
		t.Errorf("uploads/taken: got %q (%v), want it untouched: %q", stored, err, other)
	}
	if got, want := keys(t, r.bucket.Bucket), []string{"uploads/good", "uploads/taken"}; !slices.Equal(got, want) {
		t.Errorf("keys: got %q, want %q", got, want)
	}
}
