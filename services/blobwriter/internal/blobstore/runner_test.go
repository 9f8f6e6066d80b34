package blobstore_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/marker"
	"github.com/blobref/blobref/internal/steprun"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/blobwriter/internal/blobstore"
)

// runner is blobwriter's step run by the real steprun.Runner over an
// in-process JetStream server and a Postgres schema of its own, writing to a
// counting file:// bucket.
type runner struct {
	t      *testing.T
	js     jetstream.JetStream
	pg     *testenv.Postgres
	bucket *countingBucket
	stored chan *nats.Msg // uploads.blob.stored.>
	dead   chan *nats.Msg // dlq.uploads.>
}

func setupRunner(t *testing.T) *runner {
	t.Helper()
	nc, js := testenv.StartNATS(t).Connect()
	r := &runner{
		t:      t,
		js:     js,
		pg:     testenv.StartPostgres(t),
		bucket: &countingBucket{Bucket: openBucket(t, "file://"+t.TempDir())},
		stored: make(chan *nats.Msg, 1024),
		dead:   make(chan *nats.Msg, 64),
	}
	for subject, ch := range map[string]chan *nats.Msg{"uploads.blob.stored.>": r.stored, events.DLQSubjects: r.dead} {
		sub, err := nc.ChanSubscribe(subject, ch)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	w := &blobstore.Writer{Bucket: r.bucket, Claims: blobstore.ObjectClaims{JS: js}}
	run, err := steprun.New(js, marker.NewStore(r.pg.Pool), w.Step(), steprun.Options{
		Concurrency: 8,
		BackoffBase: 10 * time.Millisecond,
		BackoffMax:  50 * time.Millisecond,
		FetchWait:   200 * time.Millisecond,
		Logger:      slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		if err := run.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-stopped })
	return r
}

func (r *runner) publish(ev *events.Event, msgID string) {
	r.t.Helper()
	msg, err := ev.Msg(msgID)
	if err != nil {
		r.t.Fatalf("Msg: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := r.js.PublishMsg(ctx, msg); err != nil {
		r.t.Fatalf("publish %s: %v", msg.Subject, err)
	}
}

// awaitStored waits for n blob_stored events and returns them by upload id.
func (r *runner) awaitStored(n int) map[string][]*events.Event {
	r.t.Helper()
	got := map[string][]*events.Event{}
	deadline := time.After(30 * time.Second)
	for i := range n {
		select {
		case m := <-r.stored:
			ev, err := events.Decode(m.Subject, m.Header, m.Data)
			if err != nil {
				r.t.Fatalf("emitted event does not decode: %v", err)
			}
			got[ev.ID] = append(got[ev.ID], ev)
		case <-deadline:
			r.t.Fatalf("got %d blob_stored events, want %d", i, n)
		}
	}
	return got
}

// awaitDead waits for n dead letters and returns them by original subject.
func (r *runner) awaitDead(n int) map[string]events.DeadLetter {
	r.t.Helper()
	got := map[string]events.DeadLetter{}
	deadline := time.After(30 * time.Second)
	for i := range n {
		select {
		case m := <-r.dead:
			d, err := events.ParseDeadLetter(m.Header)
			if err != nil {
				r.t.Fatalf("ParseDeadLetter: %v", err)
			}
			got[d.Subject] = d
		case <-deadline:
			r.t.Fatalf("got %d dead letters, want %d", i, n)
		}
	}
	return got
}

func TestRunnerWritesEachBlobOnce(t *testing.T) {
	t.Parallel()
	r := setupRunner(t)
	const n = 50
	reqs := make([]*events.Event, n)
	for i := range n {
		reqs[i] = request(t, fmt.Sprintf("u%03d", i), fmt.Appendf(nil, "bytes of upload %d", i))
		r.publish(reqs[i], reqs[i].ID)
	}
	first := r.awaitStored(n)
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
		r.publish(req, "")
	}
	again := r.awaitStored(n)
	for _, req := range reqs {
		if evs := again[req.ID]; len(evs) != 1 || *evs[0].Blob != *first[req.ID][0].Blob {
			t.Errorf("%s: re-emitted %d events, want 1 with the recorded result %+v", req.ID, len(evs), *first[req.ID][0].Blob)
		}
	}
	if w := r.bucket.writes.Load(); w != n {
		t.Errorf("writes after republishing: got %d, want %d", w, n)
	}
	if got := r.pg.Count(t, `SELECT count(*) FROM step_markers WHERE step = $1`, blobstore.StepName); got != n {
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
		r.publish(ev, ev.ID)
	}

	dead := r.awaitDead(3)
	for _, tt := range []struct {
		id, reason string
	}{
		{"taken", events.ReasonConflict},
		{"lying", events.ReasonDigestMismatch},
		{"unstaged", events.ReasonClaimMissing},
	} {
		d, ok := dead[events.RequestedSubject(tt.id)]
		if !ok || d.Reason != tt.reason || d.Step != blobstore.StepName {
			t.Errorf("%s: got dead letter %+v (found %v), want reason %s at step %s", tt.id, d, ok, tt.reason, blobstore.StepName)
		}
	}
	if evs := r.awaitStored(1); len(evs["good"]) != 1 {
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
