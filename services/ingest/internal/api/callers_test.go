package api_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/ingest/internal/uploads"
)

// reference checks that r is 200 with a reference, and returns it.
func (r reply) reference(t *testing.T) events.Reference {
	t.Helper()
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET reference: got %d %s (%s), want 200 application/json", r.status, r.header.Get("Content-Type"), r.body)
	}
	var ref events.Reference
	if err := json.Unmarshal(r.body, &ref); err != nil {
		t.Fatalf("reference %s: %v", r.body, err)
	}
	return ref
}

func referencePath(subject string) string {
	return "/v1/references?subject=" + url.QueryEscape(subject)
}

// Two callers upload to one subject: each request event is owned by its
// caller, and each caller's current reference is its own, whatever the
// other uploads later.
func TestEachCallerHasItsOwnCurrentReference(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const subject = "users/42/avatar"
	path := referencePath(subject)
	e.get(aliceToken, path).problem(t, http.StatusNotFound, "not-found", "no current reference")

	e.post(upload{key: "a1", subject: subject, body: []byte("alice's first")}).state(t, http.StatusAccepted)
	aliceReq := e.awaitRequests(uploads.ID("alice", "a1"), 1)[0]
	if aliceReq.Owner != "alice" {
		t.Errorf("owner of alice's request: got %q, want alice", aliceReq.Owner)
	}
	aliceRef := e.complete(aliceReq)

	// bob's upload to the same subject, later: the takeover attempt.
	e.clock.Advance(1)
	e.post(upload{token: bobToken, key: "b1", subject: subject, body: []byte("bob's")}).state(t, http.StatusAccepted)
	bobReq := e.awaitRequests(uploads.ID("bob", "b1"), 1)[0]
	if bobReq.Owner != "bob" {
		t.Errorf("owner of bob's request: got %q, want bob", bobReq.Owner)
	}
	bobRef := e.complete(bobReq)

	if got := e.get(aliceToken, path).reference(t); got != aliceRef {
		t.Errorf("alice's current reference: got %+v, want her own %+v", got, aliceRef)
	}
	if got := e.get(bobToken, path).reference(t); got != bobRef {
		t.Errorf("bob's current reference: got %+v, want his own %+v", got, bobRef)
	}
	// A caller that never uploaded to the subject has none; another subject
	// has none.
	e.get(readerToken, path).problem(t, http.StatusNotFound, "not-found")
	e.get(aliceToken, referencePath("users/42/banner")).problem(t, http.StatusNotFound, "not-found")

	// alice's newer upload moves her reference, not bob's.
	e.clock.Advance(1)
	e.post(upload{key: "a2", subject: subject, body: []byte("alice's second")}).state(t, http.StatusAccepted)
	newer := e.complete(e.awaitRequests(uploads.ID("alice", "a2"), 1)[0])
	if got := e.get(aliceToken, path).reference(t); got != newer {
		t.Errorf("alice's current reference after her second upload: got %+v, want %+v", got, newer)
	}
	if got := e.get(bobToken, path).reference(t); got != bobRef {
		t.Errorf("bob's current reference after alice's second upload: got %+v, want %+v", got, bobRef)
	}
}

func TestReferencesRequests(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.get(uploaderToken, referencePath("users/42/avatar")).problem(t, http.StatusForbidden, "forbidden", `"read"`)
	e.get("-", referencePath("users/42/avatar")).problem(t, http.StatusUnauthorized, "unauthorized")
	e.get(aliceToken, "/v1/references").problem(t, http.StatusBadRequest, "invalid-request", "subject", "required")
	e.get(aliceToken, referencePath("users/../42")).problem(t, http.StatusBadRequest, "invalid-request", "subject", "..")
	e.get(aliceToken, referencePath("a")+"&subject=b").problem(t, http.StatusBadRequest, "invalid-request", "more than once")
}

// A token with subject prefixes may use the subjects under them, and is
// answered 403 for any other, naming the prefixes; nothing is recorded.
func TestSubjectOutsideThePrefixesIs403(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for _, subject := range []string{"users/42/avatar", "users/70/avatar", "teams/10/logo", "users/7"} {
		r := e.post(upload{token: carolToken, key: "outside " + subject, subject: subject, body: []byte("x")})
		p := r.problem(t, http.StatusForbidden, "subject-forbidden", "users/7/", "teams/1/")
		if !slices.Equal(p.Prefixes, []string{"users/7/", "teams/1/"}) {
			t.Errorf("%s: prefixes: got %v, want the token's", subject, p.Prefixes)
		}
		if strings.Contains(string(r.body), carolToken) {
			t.Errorf("%s: the problem repeats the token: %s", subject, r.body)
		}
		e.get(carolToken, referencePath(subject)).problem(t, http.StatusForbidden, "subject-forbidden", "users/7/")
	}
	if n := e.pg.Count(t, `SELECT count(*) FROM ingest_uploads`); n != 0 {
		t.Errorf("records: got %d, want 0", n)
	}
	for _, subject := range []string{"users/7/avatar", "teams/1/logo", "teams/1/a/b"} {
		e.post(upload{token: carolToken, key: "inside " + subject, subject: subject, body: []byte("x")}).state(t, http.StatusAccepted)
	}
	e.get(carolToken, referencePath("users/7/avatar")).problem(t, http.StatusNotFound, "not-found")
}

// Every rule of the event contract is applied before anything is recorded
// or staged: a request that breaks one is answered at once, and leaves no
// record, lease, staged object or event.
func TestContractRulesBeforeRecording(t *testing.T) {
	t.Parallel()
	e := setup(t)
	longType := "text/plain; x=" + strings.Repeat("a", 5000)
	for name, tc := range map[string]struct {
		u       upload
		status  int
		slug    string
		mention []string
	}{
		"5000-byte content type":        {upload{contentType: longType}, http.StatusUnsupportedMediaType, "unsupported-media-type", []string{"256"}},
		"5000-byte content type, large": {upload{contentType: longType, body: randomBytes(1<<20, 1)}, http.StatusUnsupportedMediaType, "unsupported-media-type", []string{"256"}},
		"dot-dot segment":               {upload{subject: "users/42/../43"}, http.StatusBadRequest, "invalid-request", []string{"subject", ".."}},
		"backslash dot-dot":             {upload{subject: `users\..\43`}, http.StatusBadRequest, "invalid-request", []string{"subject", ".."}},
		"zero-width space":              {upload{subject: "users/42\u200b/avatar"}, http.StatusBadRequest, "invalid-request", []string{"subject", "format character"}},
		"right-to-left override":        {upload{subject: "users/42/\u202egnp.avatar"}, http.StatusBadRequest, "invalid-request", []string{"subject"}},
		"1025-byte subject":             {upload{subject: strings.Repeat("s", 1025)}, http.StatusBadRequest, "invalid-request", []string{"subject", "1024"}},
		"invalid UTF-8 subject":         {upload{query: "subject=users%2F%FF"}, http.StatusBadRequest, "invalid-request", []string{"subject", "UTF-8"}},
	} {
		t.Run(name, func(t *testing.T) {
			u := tc.u
			u.key = name
			if u.body == nil {
				u.body = []byte("x")
			}
			r := e.post(u)
			r.problem(t, tc.status, tc.slug, tc.mention...)
			if len(r.body) > 2000 {
				t.Errorf("problem: %d bytes, want the bad value not repeated whole", len(r.body))
			}
		})
	}
	for _, table := range []string{"ingest_uploads", "ingest_leases"} {
		if n := e.pg.Count(t, `SELECT count(*) FROM `+table); n != 0 {
			t.Errorf("%s: got %d rows, want 0", table, n)
		}
	}
	if n := e.pg.Count(t, `SELECT count(*) FROM ingest_uploads`); n != 0 {
		t.Errorf("records: got %d, want 0", n)
	}
	if got := e.counter("blobref_ingest_publishes_total"); got != 0 {
		t.Errorf("publishes: got %v, want 0", got)
	}
	if got := e.counter("blobref_ingest_staged_total"); got != 0 {
		t.Errorf("staged bodies: got %v, want 0", got)
	}
	// A content type of 256 bytes is the longest accepted.
	longest := "text/plain; x=" + strings.Repeat("a", 256-len("text/plain; x="))
	st := e.post(upload{key: "longest", contentType: longest, body: []byte("x")}).state(t, http.StatusAccepted)
	if st.ContentType != longest {
		t.Errorf("content type: got %q, want the 256 bytes sent", st.ContentType)
	}
}

// A failed upload's state says why in the pipeline's words: the reason,
// the step and what the reason means, never the step's own error text.
func TestFailedStateHidesTheStepsError(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := uploads.ID("alice", "doomed")
	e.post(upload{key: "doomed", body: []byte("doomed")}).state(t, http.StatusAccepted)
	d := e.deadLetter(e.awaitRequests(id, 1)[0], events.ReasonRetriesExhausted, "blob")
	r := e.get(aliceToken, "/v1/uploads/"+id)
	st := r.state(t, http.StatusOK)
	if st.State != uploads.StateFailed || st.DeadLetter == nil || st.DeadLetter.Reason != events.ReasonRetriesExhausted ||
		st.DeadLetter.Step != "blob" || !strings.Contains(st.DeadLetter.Message, "gave up") {
		t.Errorf("failed: got %+v (dead letter %+v), want reason, step and a message", st, st.DeadLetter)
	}
	for _, secret := range []string{d.Error, "10.1.2.3", "password"} {
		if strings.Contains(string(r.body), secret) {
			t.Errorf("GET %s repeats the step's error (%q): %s", id, secret, r.body)
		}
	}
}
