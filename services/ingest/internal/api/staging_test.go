package api_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/claimcheck"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/ingest/internal/uploads"
)

// stagedBytes is what ingest has written to the staging bucket so far.
func (e *env) stagedBytes() int64 {
	e.t.Helper()
	return int64(e.counter("blobref_ingest_staged_bytes_total"))
}

// stagingChunkBytes is the count of the staging bucket's chunk messages
// (its objects' fences left out: one small message each, see
// claimcheck's stageWriter) and the bytes of all messages on C subjects.
func (e *env) stagingChunkBytes() (msgs, size uint64) {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, "OBJ_uploads-staging")
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("$O.uploads-staging.C.>"))
	if err != nil {
		e.t.Fatal(err)
	}
	for subject, n := range info.State.Subjects {
		if !strings.HasPrefix(subject, "$O.uploads-staging.C.fence-") {
			msgs += n
		}
	}
	return msgs, info.State.Bytes
}

// checkStagedObject checks that the staging bucket holds body as upload id.
func (e *env) checkStagedObject(id string, body []byte) {
	e.t.Helper()
	store, err := e.js.ObjectStore(context.Background(), "uploads-staging")
	if err != nil {
		e.t.Fatal(err)
	}
	got, err := store.GetBytes(context.Background(), id)
	if err != nil || !bytes.Equal(got, body) {
		e.t.Fatalf("staged object %s: got %d bytes (%v), want the %d uploaded", id, len(got), err, len(body))
	}
}

// postBroken sends the first n bytes of body, chunked, waits until ingest
// has staged staged bytes of them, then breaks the request as a client
// whose connection drops does.
func (e *env) postBroken(key string, body []byte, n int, staged int64) {
	e.t.Helper()
	pr, pw := io.Pipe()
	go func() { _, _ = pw.Write(body[:n]) }()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/uploads?subject="+url.QueryEscape("users/42/avatar"), io.NopCloser(pr))
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+aliceToken)
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", "application/octet-stream")
	status := make(chan int, 1)
	go func() {
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	e.awaitCounter("blobref_ingest_staged_bytes_total", float64(staged))
	pw.CloseWithError(errors.New("the client's connection dropped"))
	if got := <-status; got != 0 {
		e.t.Fatalf("a broken body: got %d, want the request to fail", got)
	}
}

// A body cut short by the client leaves what was staged of it; the retry
// with the same key sends the whole body, and ingest verifies the staged
// prefix against it and stages only the rest.
func TestStagingResumesAfterABrokenBody(t *testing.T) {
	t.Parallel()
	e := setup(t)
	body := randomBytes(5<<20+123, 11)
	id := uploads.ID("alice", "broken")

	e.postBroken("broken", body, 3<<20+1000, 3<<20)
	e.awaitRows(`SELECT count(*) FROM ingest_leases WHERE id = $1`, 0, id)
	first := e.stagedBytes()
	if _, size := e.stagingChunkBytes(); first != 3<<20 || size < uint64(first) {
		t.Fatalf("first attempt: staged %d bytes (%d in the bucket's chunks), want part of the %d", first, size, len(body))
	}
	if n := e.pg.Count(t, `SELECT count(*) FROM ingest_uploads WHERE id = $1`, id); n != 0 {
		t.Fatalf("records after the broken body: got %d, want 0", n)
	}

	st := e.post(upload{key: "broken", contentType: "application/octet-stream", body: body}).state(t, http.StatusAccepted)
	if st.Size != int64(len(body)) || st.SHA256 != sha(body) {
		t.Errorf("retry: got %d bytes with %s, want %d with %s", st.Size, st.SHA256, len(body), sha(body))
	}
	if got, want := e.stagedBytes()-first, int64(len(body))-first; got != want {
		t.Errorf("retry staged %d bytes, want the %d missing", got, want)
	}
	if got := e.counter("blobref_ingest_staged_total", `outcome="resumed"`); got != 1 {
		t.Errorf("staged_total{resumed}: got %v, want 1", got)
	}
	e.checkStagedObject(id, body)
	if evs := e.awaitRequests(id, 1); evs[0].DataRef != "nats-object://uploads-staging/"+id || evs[0].SHA256 != sha(body) {
		t.Errorf("request event: got dataref %q sha256 %s", evs[0].DataRef, evs[0].SHA256)
	}
}

// A retry with other bytes than the staged prefix does not build on it:
// the chunks are dropped (rolled up: ingest may not purge), the client is
// told to retry (503), and that retry stages its body afresh.
func TestStagingDropsAPrefixOfOtherBytes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := uploads.ID("alice", "other")
	e.postBroken("other", randomBytes(3<<20, 12), 2<<20, 1<<20)
	e.awaitRows(`SELECT count(*) FROM ingest_leases WHERE id = $1`, 0, id)

	body := randomBytes(3<<20, 13)
	e.post(upload{key: "other", contentType: "application/octet-stream", body: body}).problem(t, http.StatusServiceUnavailable, "unavailable")
	if msgs, _ := e.stagingChunkBytes(); msgs != 1 {
		t.Errorf("chunk messages after the mismatch: got %d, want 1 (the tombstone they were rolled up into)", msgs)
	}
	e.post(upload{key: "other", contentType: "application/octet-stream", body: body}).state(t, http.StatusAccepted)
	e.checkStagedObject(id, body)
}

// JetStream going away in the middle of a body is waited out: the chunks
// it refuses meanwhile are retried, and the upload is accepted on its
// first attempt, staged in order and whole.
func TestStagingRetriesThroughAJetStreamRestart(t *testing.T) {
	t.Parallel()
	e := setup(t, func(o *options) {
		o.staging = func(s *claimcheck.Staging) { s.PublishTimeout = 500 * time.Millisecond }
	})
	body := randomBytes(4<<20, 14)
	id := uploads.ID("alice", "restart")
	pr, pw := io.Pipe()
	answer := make(chan reply, 1)
	go func() {
		answer <- e.post(upload{key: "restart", contentType: "application/octet-stream", stream: pr})
	}()
	if _, err := pw.Write(body[:1<<20]); err != nil {
		t.Fatal(err)
	}
	e.awaitCounter("blobref_ingest_staged_bytes_total", 1<<20)
	e.nats.Shutdown()
	go func() {
		_, _ = pw.Write(body[1<<20:])
		pw.Close()
	}()
	e.awaitCounter("blobref_ingest_staging_retries_total", 1)
	e.nats.Restart()

	st := (<-answer).state(t, http.StatusAccepted)
	if st.Size != int64(len(body)) || st.SHA256 != sha(body) {
		t.Errorf("state: got %d bytes with %s, want %d with %s", st.Size, st.SHA256, len(body), sha(body))
	}
	e.checkStagedObject(id, body)
	if got := e.stagedBytes(); got != int64(len(body)) {
		t.Errorf("staged bytes: got %d, want %d (each chunk once)", got, len(body))
	}
}

// awaitCounter waits until counter family reaches at least n.
func (e *env) awaitCounter(family string, n float64) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for e.counter(family) < n {
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: got %v, want at least %v", family, e.counter(family), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A full store answers 507 with Retry-After and keeps nothing of the body:
// no record, no request, no staged chunk; space is there again for the
// next upload. Both ways a store fills: the staging bucket's own bound,
// and the server's JetStream store (max_file_store).
func TestStagingStoreFullIs507(t *testing.T) {
	t.Parallel()
	for name, opt := range map[string]func(*options){
		"bucket bound": func(o *options) {
			o.staging = func(s *claimcheck.Staging) { s.MaxBytes = 4 << 20 }
		},
		"server store": func(o *options) {
			o.natsConf = "max_payload: 8MB\njetstream {\n  max_memory_store: 64MB\n  max_file_store: 24MB\n}\n"
			o.streams = events.StreamOptions{MaxBytes: 4 << 20, DLQMaxBytes: 1 << 20}
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, opt)
			id := uploads.ID("alice", "full")
			r := e.post(upload{key: "full", contentType: "application/octet-stream", body: randomBytes(32<<20, 15)})
			r.problem(t, http.StatusInsufficientStorage, "storage-full")
			if r.header.Get("Retry-After") == "" {
				t.Error("507 without Retry-After")
			}
			for _, q := range []string{`SELECT count(*) FROM ingest_uploads WHERE id = $1`, `SELECT count(*) FROM ingest_leases WHERE id = $1`} {
				if n := e.pg.Count(t, q, id); n != 0 {
					t.Errorf("%s: got %d, want 0", q, n)
				}
			}
			if evs, _ := e.requests(id); len(evs) != 0 {
				t.Errorf("request events: got %d, want 0", len(evs))
			}
			if msgs, size := e.stagingChunkBytes(); msgs != 0 {
				t.Errorf("staging bucket after 507: %d chunks (%d bytes), want none", msgs, size)
			}
			small := randomBytes(2<<20, 16)
			e.post(upload{key: "after", contentType: "application/octet-stream", body: small}).state(t, http.StatusAccepted)
			e.checkStagedObject(uploads.ID("alice", "after"), small)
		})
	}
}
