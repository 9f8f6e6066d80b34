package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/ingest/internal/uploads"
)

// natsRequest is a request event that a producer of owner publishes straight
// over NATS, not through ingest.
func natsRequest(t *testing.T, prefix, owner, subject string) *events.Event {
	t.Helper()
	req, err := events.NewRequested(events.Request{ID: testenv.ID(prefix), Source: "/test/producer", Owner: owner,
		Subject: subject, ContentType: "text/plain", Data: []byte("published over NATS by " + owner)})
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// An upload published over NATS is its owner's to read once a step stored
// or dead-lettered it (the request event itself may come from any
// producer, so it shows nothing), and nobody else's.
func TestStatusOfUploadsPublishedOverNATS(t *testing.T) {
	t.Parallel()
	e := setup(t)
	req := natsRequest(t, "direct", "alice", "users/42/avatar")
	testenv.Publish(t, e.js, req, req.ID)
	path := "/v1/uploads/" + req.ID
	e.get(aliceToken, path).problem(t, http.StatusNotFound, "not-found")

	e.storeBlob(req)
	stored := e.get(aliceToken, path).state(t, http.StatusOK)
	if stored.State != uploads.StateStored || stored.Steps.Blob == nil || stored.Steps.Accepted != nil || stored.Subject != req.Subject ||
		stored.SHA256 != req.SHA256 || stored.Size != int64(len(req.Data)) || !stored.CreatedAt.Equal(req.Time) {
		t.Errorf("stored: got %+v, want stored with the request's subject, size, sha256 and time", stored)
	}
	for _, token := range []string{bobToken, readerToken} {
		e.get(token, path).problem(t, http.StatusNotFound, "not-found")
	}
	ref := e.complete(req)
	completed := e.get(aliceToken, path).state(t, http.StatusOK)
	if completed.State != uploads.StateCompleted || completed.Reference == nil || *completed.Reference != ref || completed.Steps.Ref == nil {
		t.Errorf("completed: got %+v, want the reference %+v", completed, ref)
	}

	// Dead-lettered by blobwriter: failed, with the reason and not the
	// step's own error text.
	doomed := natsRequest(t, "doomed", "alice", "users/42/banner")
	testenv.Publish(t, e.js, doomed, doomed.ID)
	d := e.deadLetter(doomed, events.ReasonDigestMismatch, events.StepBlob)
	r := e.get(aliceToken, "/v1/uploads/"+doomed.ID)
	failed := r.state(t, http.StatusOK)
	if failed.State != uploads.StateFailed || failed.DeadLetter == nil || failed.DeadLetter.Reason != d.Reason ||
		failed.DeadLetter.Step != events.StepBlob || !failed.DeadLetter.At.Equal(d.Time) || failed.DeadLetter.Message == "" {
		t.Errorf("failed: got %+v (dead letter %+v), want the dead letter %+v", failed, failed.DeadLetter, d)
	}
	for _, leak := range []string{"10.1.2.3", "postgres://", "connection refused"} {
		if strings.Contains(string(r.body), leak) {
			t.Errorf("failed upload's state %s: carries the step's error text %q", r.body, leak)
		}
	}
	e.get(bobToken, "/v1/uploads/"+doomed.ID).problem(t, http.StatusNotFound, "not-found")
}

// Events in any order: a completed event before its blob_stored, and a
// dead letter after the completion, leave the upload completed.
func TestStatusToleratesEventsOutOfOrder(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := uploads.ID("alice", "ooo")
	e.post(upload{key: "ooo", body: []byte("out of order")}).state(t, http.StatusAccepted)
	stored, completed, ref := e.pipelineEvents(e.awaitRequests(id, 1)[0])
	path := "/v1/uploads/" + id

	testenv.Publish(t, e.js, completed, "")
	e.awaitRows(`SELECT count(*) FROM ingest_upload_view WHERE id = $1 AND completed_at IS NOT NULL`, 1, id)
	first := e.get(aliceToken, path).state(t, http.StatusOK)
	if first.State != uploads.StateCompleted || first.Reference == nil || *first.Reference != ref || first.Steps.Blob == nil || first.Steps.Ref == nil {
		t.Errorf("completed before stored: got %+v, want completed with %+v and both steps", first, ref)
	}
	testenv.Publish(t, e.js, stored, "")
	e.awaitRows(`SELECT count(*) FROM ingest_upload_view WHERE id = $1 AND stored_at IS NOT NULL`, 1, id)
	e.deadLetter(stored, events.ReasonRetriesExhausted, events.StepRef)
	after := e.get(aliceToken, path).state(t, http.StatusOK)
	if after.State != uploads.StateCompleted || after.Reference == nil || *after.Reference != ref || after.DeadLetter != nil {
		t.Errorf("after the late blob_stored and a dead letter: got %+v, want still completed", after)
	}
}

// A dead letter that a later event of the pipeline overtook (the request
// re-driven from the dead-letter stream, and stored) no longer fails the
// upload.
func TestStatusAfterARedriveOverNATS(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := uploads.ID("alice", "redriven")
	e.post(upload{key: "redriven", body: []byte("dead, then re-driven")}).state(t, http.StatusAccepted)
	req := e.awaitRequests(id, 1)[0]
	e.deadLetter(req, events.ReasonRetriesExhausted, events.StepBlob)
	path := "/v1/uploads/" + id
	if st := e.get(aliceToken, path).state(t, http.StatusOK); st.State != uploads.StateFailed {
		t.Fatalf("dead-lettered: got %+v, want failed", st)
	}
	e.storeBlob(req)
	if st := e.get(aliceToken, path).state(t, http.StatusOK); st.State != uploads.StateStored || st.DeadLetter != nil {
		t.Errorf("re-driven and stored: got %+v, want stored", st)
	}
}

// A GET right after a Prefer: wait answer says what the answer said, with
// the read model nowhere near (its consumers do not run here).
func TestGetAfterAWaitAgrees(t *testing.T) {
	t.Parallel()
	e := setup(t, func(o *options) { o.noReadModel = true })
	id := uploads.ID("alice", "agrees")
	done := make(chan reply, 1)
	go func() {
		done <- e.post(upload{key: "agrees", body: []byte("then GET"), header: http.Header{"Prefer": {"wait=10"}}})
	}()
	e.publishCompleted(e.awaitRequests(id, 1)[0])
	var answered uploads.State
	select {
	case r := <-done:
		answered = r.state(t, http.StatusCreated)
	case <-time.After(timeout):
		t.Fatal("POST with Prefer: wait did not answer after the upload completed")
	}
	got := e.get(aliceToken, "/v1/uploads/"+id).state(t, http.StatusOK)
	if answered.State != uploads.StateCompleted || answered.Reference == nil {
		t.Fatalf("POST with Prefer: wait: got %+v, want completed with its reference", answered)
	}
	if got.State != uploads.StateCompleted || got.Reference == nil || *got.Reference != *answered.Reference {
		t.Errorf("GET right after the 201 (%+v): got %+v, want completed with the same reference", answered, got)
	}
}

// A GET and a retry of an upload that completed while the read model is
// behind (here it never catches up) answer completed from the completed
// event in UPLOADS, rather than what the read model still says: a GET right
// after a Prefer: wait answer agrees with it, and a retry does not wait for
// a completion that came before it. Either tells the read model.
func TestStatusCatchesUpWithTheEvents(t *testing.T) {
	t.Parallel()
	e := setup(t, func(o *options) { o.noReadModel = true })
	behind := func(key string) (id string, body []byte, ref events.Reference) {
		t.Helper()
		id = uploads.ID("alice", key)
		body = []byte("completed while the read model was behind: " + key)
		e.post(upload{key: key, body: body}).state(t, http.StatusAccepted)
		stored, completed, ref := e.pipelineEvents(e.awaitRequests(id, 1)[0])
		testenv.Publish(t, e.js, stored, "")
		testenv.Publish(t, e.js, completed, "")
		if n := e.pg.Count(t, `SELECT count(*) FROM ingest_upload_view WHERE id = $1 AND completed_at IS NOT NULL`, id); n != 0 {
			t.Fatalf("%s: the read model has the completion already", key)
		}
		return id, body, ref
	}
	told := func(id string) {
		t.Helper()
		if n := e.pg.Count(t, `SELECT count(*) FROM ingest_upload_view WHERE id = $1 AND completed_at IS NOT NULL AND ref IS NOT NULL`, id); n != 1 {
			t.Errorf("%s: the read model was not told of the completion", id)
		}
	}

	id, _, ref := behind("behind-get")
	if st := e.get(aliceToken, "/v1/uploads/"+id).state(t, http.StatusOK); st.State != uploads.StateCompleted || st.Reference == nil || *st.Reference != ref {
		t.Errorf("GET with the read model behind: got %+v, want completed with %+v", st, ref)
	}
	told(id)

	id, body, ref := behind("behind-retry")
	r := e.post(upload{key: "behind-retry", body: body, header: http.Header{"Prefer": {"wait=1"}}})
	if st := r.state(t, http.StatusOK); st.State != uploads.StateCompleted || st.Reference == nil || *st.Reference != ref {
		t.Errorf("retry: got %+v, want completed with %+v", st, ref)
	}
	told(id)
}
