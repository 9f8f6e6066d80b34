//go:build blobref_failpoints

package api_test

import (
	"net/http"
	"testing"

	"github.com/blobref/blobref/pkg/step/failpoint"
	"github.com/blobref/blobref/services/ingest/internal/uploads"
)

// An error injected at each of ingest's failpoints is a transient failure
// (503), and the client's retry finishes the upload: staged once, recorded
// once, published once. (The crashes at the same points run against the
// real binaries in e2e.) Not parallel: failpoints are process-wide.
func TestFailpointErrorsAreTransient(t *testing.T) {
	for _, point := range []string{"ingest/after-stage", "ingest/after-record", "ingest/after-publish"} {
		t.Run(point, func(t *testing.T) {
			e := setup(t)
			if err := failpoint.Enable(point + "=1*error"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = failpoint.Enable("") })
			body := randomBytes(600<<10, 7) // above the inline threshold: staged
			id := uploads.ID("alice", "key-1")

			e.post(upload{body: body}).problem(t, http.StatusServiceUnavailable, "unavailable", "retry")
			staged := e.stagingMsgs()
			st := e.post(upload{body: body}).state(t, http.StatusAccepted)
			if st.ID != id || st.Steps.Accepted == nil || st.SHA256 != sha(body) {
				t.Errorf("retry: got %+v, want upload %s accepted", st, id)
			}

			evs := e.awaitRequests(id, 1)
			if evs[0].SHA256 != sha(body) || evs[0].DataRef == "" {
				t.Errorf("request event: got sha256 %s dataref %q, want %s and a dataref", evs[0].SHA256, evs[0].DataRef, sha(body))
			}
			if n, published, _ := e.record(id); n != 1 || !published {
				t.Errorf("record: got publish_count %d, published %v; want 1, true", n, published)
			}
			if got := e.stagingMsgs(); got != staged {
				t.Errorf("staging bucket: %d messages after the retry, want the %d of the first attempt (staged once)", got, staged)
			}
			if got := e.counter("blobref_ingest_staged_total", `outcome="staged"`); got != 1 {
				t.Errorf("staged_total{staged}: got %v, want 1", got)
			}
			if got := e.counter("blobref_ingest_publishes_total"); got != 1 {
				t.Errorf("publishes_total: got %v, want 1", got)
			}
		})
	}
}

// A failure in the middle of staging a body (ingest/mid-stage: two chunks
// staged, more to come) answers 503; the client's retry with the same key
// and the whole body stages only the part that was missing.
func TestMidStageFailureRetryStagesTheRest(t *testing.T) {
	e := setup(t)
	if err := failpoint.Enable("ingest/mid-stage=1*error"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = failpoint.Enable("") })
	body := randomBytes(3<<20+17, 21)
	id := uploads.ID("alice", "mid")

	e.post(upload{key: "mid", contentType: "application/octet-stream", body: body}).problem(t, http.StatusServiceUnavailable, "unavailable", "retry")
	first := e.stagedBytes()
	if msgs, size := e.stagingChunkBytes(); first != 1<<20 || msgs != 2 || size < uint64(first) {
		t.Fatalf("first attempt: staged %d bytes, %d chunks (%d bytes) in the bucket; want 1 MiB in 2 chunks", first, msgs, size)
	}
	e.post(upload{key: "mid", contentType: "application/octet-stream", body: body}).state(t, http.StatusAccepted)
	if got, want := e.stagedBytes()-first, int64(len(body))-first; got != want {
		t.Errorf("retry staged %d bytes, want the %d missing", got, want)
	}
	e.checkStagedObject(id, body)
	if got := e.counter("blobref_ingest_staged_total", `outcome="resumed"`); got != 1 {
		t.Errorf("staged_total{resumed}: got %v, want 1", got)
	}
}
