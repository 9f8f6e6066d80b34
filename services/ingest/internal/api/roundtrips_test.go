package api_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/ingest/internal/uploads"
)

// TestRoundTripsOfOneUpload counts what one new upload with Prefer: wait
// costs on the wire, from the POST to its 201: the Postgres round trips and
// the NATS operations of the service. A first upload warms the connections
// (prepared statements, the JetStream reply subscription) and is not
// counted.
//
// Before the group commit the same upload cost 6 Postgres round trips (the
// claim, SELECT, INSERT, UPDATE, the unlock, SELECT after the completion)
// and 2 NATS round trips (the flush of a SUB per wait, the publish), one
// after another.
func TestRoundTripsOfOneUpload(t *testing.T) {
	t.Parallel()
	w := &wire{}
	e := setup(t, func(o *options) { o.wire = w })

	waitFor := func(key string) []string {
		t.Helper()
		m := w.mark()
		done := make(chan reply, 1)
		go func() {
			done <- e.post(upload{key: key, body: []byte("count me " + key), header: http.Header{"Prefer": {"wait=10"}}})
		}()
		req := e.awaitRequests(uploads.ID("alice", key), 1)[0]
		e.complete(req)
		select {
		case r := <-done:
			r.state(t, http.StatusCreated)
		case <-time.After(timeout):
			t.Fatalf("POST %s with Prefer: wait did not answer after the upload completed", key)
		}
		return w.since(m)
	}
	waitFor("warm-up")
	ops := waitFor("counted")
	n := count(ops)
	t.Logf("one upload with Prefer: wait: %d Postgres round trips, %d NATS round trips (%d publishes, %d subscriptions, %d pings)\n%s",
		n["pg"], n["nats"], n["PUB"]+n["HPUB"], n["SUB"], n["PING"], strings.Join(ops, "\n"))
	// The record (which also decides who owns the key), the publish, and the
	// record of the publish, which runs while the pipeline works. The
	// completed event arrives on the subscription made at start and is
	// answered at once: the read model learns of it from its own consumer,
	// and a GET before that finds the event in UPLOADS
	// (TestGetAfterAWaitAgrees).
	want := []string{"pg WITH v AS", "nats HPUB " + events.RequestedSubject(uploads.ID("alice", "counted")) + " +reply",
		"pg UPDATE ingest_uploads u"}
	if len(ops) != len(want) {
		t.Fatalf("got %d operations, want %d: %q", len(ops), len(want), want)
	}
	for i, op := range ops {
		if !strings.HasPrefix(op, want[i]) {
			t.Errorf("operation %d: got %q, want %q", i, op, want[i])
		}
	}
}

// TestRoundTripsOfARetry counts a retry of a completed upload: the insert
// that finds the key taken returns the upload as it stands in the same
// round trip, so the 200 costs one Postgres round trip and nothing on NATS.
// (Before: the claim, SELECT and the unlock, and with Prefer: wait a SUB
// and its flush: 3 Postgres and 1 NATS round trips.)
func TestRoundTripsOfARetry(t *testing.T) {
	t.Parallel()
	w := &wire{}
	e := setup(t, func(o *options) { o.wire = w })
	body := []byte("retried once completed")
	e.post(upload{key: "retried", body: body}).state(t, http.StatusAccepted)
	e.complete(e.awaitRequests(uploads.ID("alice", "retried"), 1)[0])
	e.post(upload{key: "warm-up", body: body}).state(t, http.StatusAccepted)

	m := w.mark()
	st := e.post(upload{key: "retried", body: body, header: http.Header{"Prefer": {"wait=10"}}}).state(t, http.StatusOK)
	if st.State != uploads.StateCompleted {
		t.Errorf("retry: got %+v, want completed", st)
	}
	ops := w.since(m)
	n := count(ops)
	t.Logf("a retry of a completed upload: %d Postgres round trips, %d NATS operations\n%s", n["pg"], len(ops)-n["pg"], strings.Join(ops, "\n"))
	if len(ops) != 1 || !strings.HasPrefix(ops[0], "pg WITH v AS") {
		t.Errorf("got %q, want the one insert that finds the key taken", ops)
	}
}
