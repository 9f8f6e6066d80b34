package api_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/ingest/internal/uploads"
)

func TestPostPublishesTheRequestOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	body := []byte("the bytes of an avatar")
	r := e.post(upload{key: "avatar-1", body: body})
	st := r.state(t, http.StatusAccepted)

	id := uploads.ID("alice", "avatar-1")
	if loc := r.header.Get("Location"); loc != "/v1/uploads/"+id {
		t.Errorf("Location: got %q, want /v1/uploads/%s", loc, id)
	}
	if st.ID != id || st.State != uploads.StatePending || st.Subject != "users/42/avatar" ||
		st.SHA256 != sha(body) || st.Size != int64(len(body)) || st.ContentType != "image/png" {
		t.Errorf("state: got %+v, want pending %s of users/42/avatar, %d bytes, sha256 %s", st, id, len(body), sha(body))
	}
	if st.Steps.Accepted == nil || st.Steps.Blob != nil || st.Steps.Ref != nil || st.Reference != nil {
		t.Errorf("steps: got %+v, want only accepted", st.Steps)
	}

	evs, msgIDs := e.requests(id)
	if len(evs) != 1 {
		t.Fatalf("request events: got %d, want 1", len(evs))
	}
	ev := evs[0]
	if !bytes.Equal(ev.Data, body) || ev.DataRef != "" || ev.SHA256 != sha(body) || ev.Subject != "users/42/avatar" ||
		ev.ContentType != "image/png" || ev.Source != events.SourceIngest || ev.Owner != "alice" || !ev.Time.Equal(st.CreatedAt) {
		t.Errorf("request event: got %+v, want the bytes inline with the upload's attributes", ev)
	}
	if msgIDs[0] != id {
		t.Errorf("Nats-Msg-Id: got %q, want the upload id %s", msgIDs[0], id)
	}
	if n, published, _ := e.record(id); n != 1 || !published {
		t.Errorf("record: got publish_count %d, published %v; want 1, true", n, published)
	}
	if got := e.counter("blobref_ingest_requests_total", `route="POST /v1/uploads"`, `code="202"`); got != 1 {
		t.Errorf("requests_total{202}: got %v, want 1", got)
	}
	if got := e.counter("blobref_ingest_upload_bytes_total"); got != float64(len(body)) {
		t.Errorf("upload_bytes_total: got %v, want %d", got, len(body))
	}
}

func TestRetryReturnsTheStateAndRedrives(t *testing.T) {
	t.Parallel()
	e := setup(t)
	body := []byte("retry me")
	id := uploads.ID("alice", "retry")
	first := e.post(upload{key: "retry", body: body}).state(t, http.StatusAccepted)

	// A retry soon after: the state, and no second publish.
	again := e.post(upload{key: "retry", body: body}).state(t, http.StatusAccepted)
	if again.ID != id || again.State != uploads.StatePending || !again.CreatedAt.Equal(first.CreatedAt) {
		t.Errorf("retry: got %+v, want the pending upload %s", again, id)
	}
	if evs, _ := e.requests(id); len(evs) != 1 {
		t.Errorf("request events after an early retry: got %d, want 1", len(evs))
	}

	// Pending for longer than REDRIVE_AFTER: the retry publishes again, as a
	// new message with the same event.
	e.clock.Advance(2 * time.Minute)
	e.post(upload{key: "retry", body: body}).state(t, http.StatusAccepted)
	evs, msgIDs := e.requests(id)
	if len(evs) != 2 || msgIDs[1] != id+"-1" {
		t.Fatalf("request events after a late retry: got %d with Nats-Msg-Ids %v, want 2, the second %s-1", len(evs), msgIDs, id)
	}
	if !evs[1].Time.Equal(evs[0].Time) || !bytes.Equal(evs[1].Data, body) || evs[1].SHA256 != evs[0].SHA256 {
		t.Errorf("re-driven event: got %+v, want the first one again", evs[1])
	}
	if n, _, _ := e.record(id); n != 2 {
		t.Errorf("publish_count: got %d, want 2", n)
	}
	if got := e.counter("blobref_ingest_publishes_total", `kind="redrive"`); got != 1 {
		t.Errorf("publishes_total{redrive}: got %v, want 1", got)
	}

	// Stored: the state says so, and a late retry still re-drives the steps
	// that have not finished.
	e.storeBlob(evs[0])
	e.clock.Advance(2 * time.Minute)
	st := e.post(upload{key: "retry", body: body}).state(t, http.StatusAccepted)
	if st.State != uploads.StateStored || st.Steps.Blob == nil {
		t.Errorf("retry once stored: got %+v, want stored", st)
	}
	if evs, msgIDs := e.requests(id); len(evs) != 3 || msgIDs[2] != id+"-2" {
		t.Errorf("request events after a retry once stored: got %d (%v), want 3", len(evs), msgIDs)
	}

	// Completed: 200 with the reference, and nothing is published any more.
	ref := e.complete(evs[0])
	e.clock.Advance(2 * time.Minute)
	r := e.post(upload{key: "retry", body: body})
	done := r.state(t, http.StatusOK)
	if done.State != uploads.StateCompleted || done.Reference == nil || *done.Reference != ref || done.Steps.Ref == nil {
		t.Errorf("retry once completed: got %+v, want completed with %+v", done, ref)
	}
	if loc := r.header.Get("Location"); loc != "/v1/uploads/"+id {
		t.Errorf("Location: got %q, want /v1/uploads/%s", loc, id)
	}
	if evs, _ := e.requests(id); len(evs) != 3 {
		t.Errorf("request events after a retry once completed: got %d, want 3", len(evs))
	}
}

func TestSameKeyOtherRequestIs422(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.post(upload{key: "k", body: []byte("first")}).state(t, http.StatusAccepted)
	id := uploads.ID("alice", "k")

	for name, u := range map[string]upload{
		"other bytes":        {key: "k", body: []byte("second")},
		"other subject":      {key: "k", body: []byte("first"), subject: "users/43/avatar"},
		"other content type": {key: "k", body: []byte("first"), contentType: "image/jpeg"},
	} {
		t.Run(name, func(t *testing.T) {
			what := strings.TrimPrefix(name, "other ")
			if what == "bytes" {
				what = "body"
			}
			p := e.post(u).problem(t, http.StatusUnprocessableEntity, "idempotency-key-reused", what)
			if p.ID != id {
				t.Errorf("problem id: got %q, want %s", p.ID, id)
			}
		})
	}
	if evs, _ := e.requests(id); len(evs) != 1 {
		t.Errorf("request events: got %d, want 1", len(evs))
	}
	// Another caller's same key is another upload.
	e.post(upload{token: bobToken, key: "k", body: []byte("second")}).state(t, http.StatusAccepted)
}

// While a large body with a key streams in, the key is leased: another
// request with it, large or small, is answered 409 with Retry-After, and
// no Postgres connection is held meanwhile.
func TestConcurrentSameKeyIs409(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := uploads.ID("alice", "busy")
	body := randomBytes(2<<20, 9)
	pr, pw := io.Pipe()
	first := make(chan reply, 1)
	go func() { first <- e.post(upload{key: "busy", contentType: "application/octet-stream", stream: pr}) }()
	if _, err := pw.Write(body[:1<<20]); err != nil { // past the inline threshold: staging
		t.Fatal(err)
	}
	e.awaitRows(`SELECT count(*) FROM ingest_leases WHERE id = $1`, 1, id)
	// The service shares the pool with the test, which holds none now: the
	// lease's own round trip may still be handing its connection back, but
	// a connection held while the body streams would never come back.
	deadline := time.Now().Add(timeout)
	for n := e.pg.Pool.Stat().AcquiredConns(); n != 0; n = e.pg.Pool.Stat().AcquiredConns() {
		if time.Now().After(deadline) {
			t.Fatalf("%d Postgres connections held while a body streams in, want none", n)
		}
		time.Sleep(10 * time.Millisecond)
	}

	for name, u := range map[string]upload{
		"the same bytes": {key: "busy", contentType: "application/octet-stream", body: body},
		"small bytes":    {key: "busy", body: []byte("x")},
	} {
		r := e.post(u)
		p := r.problem(t, http.StatusConflict, "idempotency-key-in-use", "Idempotency-Key")
		if p.ID != "" && p.ID != id {
			t.Errorf("%s: problem id: got %q", name, p.ID)
		}
		if r.header.Get("Retry-After") == "" {
			t.Errorf("%s: 409 without Retry-After", name)
		}
	}

	if _, err := pw.Write(body[1<<20:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	st := (<-first).state(t, http.StatusAccepted)
	if st.Size != int64(len(body)) || st.SHA256 != sha(body) {
		t.Errorf("first request: got %d bytes with %s, want %d with %s", st.Size, st.SHA256, len(body), sha(body))
	}
	if n := e.pg.Count(t, `SELECT count(*) FROM ingest_leases`); n != 0 {
		t.Errorf("leases once recorded: got %d, want 0", n)
	}
	e.post(upload{key: "busy", contentType: "application/octet-stream", body: body}).state(t, http.StatusAccepted)
	e.post(upload{key: "busy", body: []byte("x")}).problem(t, http.StatusUnprocessableEntity, "idempotency-key-reused", "body")
	if evs, _ := e.requests(id); len(evs) != 1 {
		t.Errorf("request events: got %d, want 1", len(evs))
	}
}

// Requests with one key at once, in one batch or in batches side by side:
// one records and publishes the upload, each of the others is told the key
// is busy or resumes it; the request is published once.
func TestConcurrentSameKeyPublishesOnce(t *testing.T) {
	t.Parallel()
	e := setup(t)
	const n = 16
	body := []byte("sent many times at once")
	replies := make(chan reply, n)
	for range n {
		go func() { replies <- e.post(upload{key: "herd", body: body}) }()
	}
	accepted := 0
	for range n {
		r := <-replies
		switch r.status {
		case http.StatusAccepted:
			accepted++
			if st := r.state(t, http.StatusAccepted); st.SHA256 != sha(body) || st.Steps.Accepted == nil {
				t.Errorf("202: got %+v, want the upload accepted", st)
			}
		case http.StatusConflict:
			r.problem(t, http.StatusConflict, "idempotency-key-in-use")
		default:
			t.Errorf("concurrent POST: got %d %s, want 202 or 409", r.status, r.body)
		}
	}
	if accepted == 0 {
		t.Error("no request was accepted")
	}
	id := uploads.ID("alice", "herd")
	if evs, msgIDs := e.requests(id); len(evs) != 1 || msgIDs[0] != id {
		t.Errorf("request events: got %d (%v), want 1 with Nats-Msg-Id %s", len(evs), msgIDs, id)
	}
	if n, published, _ := e.record(id); n != 1 || !published {
		t.Errorf("record: got publish_count %d, published %v; want 1, true", n, published)
	}
}

// An ingest that died holding a key (a claim on a record it had not
// published yet, or a staging lease) blocks the key with 409 until its hold
// lapses; then a retry takes over and finishes the upload, published once.
func TestHoldOfADeadIngestLapses(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()

	// Recorded, not published, claimed: it died after recording.
	body := []byte("recorded by an ingest that died")
	id := uploads.ID("alice", "claimed")
	_, err := e.pg.Pool.Exec(ctx, `
		INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type, size, sha256, created_at, payload, claimed_until)
		VALUES ($1, 'alice', 'claimed', 'users/42/avatar', 'image/png', $2, $3, $4, $5, now() + interval '1 hour')`,
		id, len(body), sha(body), e.clock.Now().UTC().Truncate(time.Microsecond), body)
	if err != nil {
		t.Fatal(err)
	}
	e.post(upload{key: "claimed", body: body}).problem(t, http.StatusConflict, "idempotency-key-in-use")
	e.post(upload{key: "claimed", body: []byte("other")}).problem(t, http.StatusConflict, "idempotency-key-in-use")
	if _, err := e.pg.Pool.Exec(ctx, `UPDATE ingest_uploads SET claimed_until = now() - interval '1 second' WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	st := e.post(upload{key: "claimed", body: body}).state(t, http.StatusAccepted)
	if st.Steps.Accepted == nil || st.SHA256 != sha(body) {
		t.Errorf("retry after the claim lapsed: got %+v, want it accepted", st)
	}
	if evs, msgIDs := e.requests(id); len(evs) != 1 || msgIDs[0] != id || !bytes.Equal(evs[0].Data, body) {
		t.Errorf("request events: got %d (%v), want 1 with Nats-Msg-Id %s and the bytes", len(evs), msgIDs, id)
	}
	if n, published, _ := e.record(id); n != 1 || !published {
		t.Errorf("record: got publish_count %d, published %v; want 1, true", n, published)
	}
	if n := e.pg.Count(t, `SELECT count(*) FROM ingest_uploads WHERE payload IS NULL AND claimed_until IS NULL AND id = $1`, id); n != 1 {
		t.Error("record: the outbox or the claim is not cleared once published")
	}

	// A staging lease: live, it blocks the key; expired, a request takes it
	// over.
	large := randomBytes(1<<20, 11)
	lid := uploads.ID("alice", "leased")
	if _, err := e.pg.Pool.Exec(ctx, `INSERT INTO ingest_leases (id, holder, expires_at) VALUES ($1, 'dead', now() + interval '1 hour')`, lid); err != nil {
		t.Fatal(err)
	}
	e.post(upload{key: "leased", body: large}).problem(t, http.StatusConflict, "idempotency-key-in-use")
	e.post(upload{key: "leased", body: []byte("small")}).problem(t, http.StatusConflict, "idempotency-key-in-use")
	if _, err := e.pg.Pool.Exec(ctx, `UPDATE ingest_leases SET expires_at = now() - interval '1 second' WHERE id = $1`, lid); err != nil {
		t.Fatal(err)
	}
	if st := e.post(upload{key: "leased", body: large}).state(t, http.StatusAccepted); st.SHA256 != sha(large) {
		t.Errorf("upload after the lease expired: got sha256 %s, want %s", st.SHA256, sha(large))
	}
	if n := e.pg.Count(t, `SELECT count(*) FROM ingest_leases`); n != 0 {
		t.Errorf("leases: got %d, want 0", n)
	}
	if evs, _ := e.requests(lid); len(evs) != 1 || evs[0].DataRef == "" {
		t.Errorf("request events of the large upload: got %d, want 1 with a dataref", len(evs))
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := e.post(upload{token: "-", body: []byte("x")})
	r.problem(t, http.StatusUnauthorized, "unauthorized", "bearer token")
	if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
		t.Errorf("WWW-Authenticate: got %q, want a Bearer challenge", got)
	}
	r = e.post(upload{token: "wrong-token", body: []byte("x")})
	r.problem(t, http.StatusUnauthorized, "unauthorized", "not valid")
	if got := r.header.Get("WWW-Authenticate"); !strings.Contains(got, `error="invalid_token"`) {
		t.Errorf("WWW-Authenticate: got %q, want error=\"invalid_token\"", got)
	}
	e.post(upload{token: readerToken, body: []byte("x")}).problem(t, http.StatusForbidden, "forbidden", `"upload"`)

	id := uploads.ID("uploader", "key-1")
	e.post(upload{token: uploaderToken, body: []byte("x")}).state(t, http.StatusAccepted)
	e.get(uploaderToken, "/v1/uploads/"+id).problem(t, http.StatusForbidden, "forbidden", `"read"`)
	e.get("-", "/v1/uploads/"+id).problem(t, http.StatusUnauthorized, "unauthorized")
	if evs, _ := e.requests(id); len(evs) != 1 {
		t.Errorf("request events: got %d, want 1 (from the uploader only)", len(evs))
	}
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for name, tc := range map[string]struct {
		u       upload
		mention []string
	}{
		"no subject":           {upload{query: "x=1", body: []byte("x")}, []string{"subject", "required"}},
		"control in subject":   {upload{query: "subject=users%2F42%01", body: []byte("x")}, []string{"subject"}},
		"blank-padded subject": {upload{query: "subject=%20users%2F42", body: []byte("x")}, []string{"subject"}},
		"two subjects":         {upload{query: "subject=a&subject=b", body: []byte("x")}, []string{"subject", "more than once"}},
		"no key":               {upload{key: "-", body: []byte("x")}, []string{"Idempotency-Key", "required"}},
		"key too long":         {upload{key: strings.Repeat("k", 256), body: []byte("x")}, []string{"Idempotency-Key", "255"}},
		"key not ascii":        {upload{key: "ключ", body: []byte("x")}, []string{"Idempotency-Key", "ASCII"}},
		"no subject, no key":   {upload{query: "x=1", key: "-", body: []byte("x")}, []string{"subject", "Idempotency-Key"}},
		"empty body":           {upload{body: nil}, []string{"body", "empty"}},
	} {
		t.Run(name, func(t *testing.T) {
			p := e.post(tc.u).problem(t, http.StatusBadRequest, "invalid-request", tc.mention...)
			if len(p.InvalidParams) == 0 {
				t.Errorf("problem: got no invalid-params, want the bad parameter named")
			}
		})
	}
	// A quoted key (an RFC 8941 string, as the IETF draft writes it) is the
	// same key as the bare one.
	e.post(upload{key: `"quoted"`, body: []byte("q")}).state(t, http.StatusAccepted)
	e.post(upload{key: "quoted", body: []byte("q")}).state(t, http.StatusAccepted)
	if evs, _ := e.requests(uploads.ID("alice", "quoted")); len(evs) != 1 {
		t.Errorf("request events of the quoted key: got %d, want 1", len(evs))
	}
}

func TestContentTypes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	for name, ct := range map[string]string{"not allowed": "application/x-msdownload", "malformed": "image/", "missing": "-"} {
		t.Run(name, func(t *testing.T) {
			r := e.post(upload{contentType: ct, body: []byte("x")})
			mention := "Content-Type"
			p := r.problem(t, http.StatusUnsupportedMediaType, "unsupported-media-type", mention)
			if len(p.Allowed) == 0 || r.header.Get("Accept-Post") == "" {
				t.Errorf("415: got allowed %v, Accept-Post %q; want the allow-list", p.Allowed, r.header.Get("Accept-Post"))
			}
		})
	}
	// Wildcards and parameters.
	st := e.post(upload{key: "txt", contentType: "Text/Plain; charset=UTF-8", body: []byte("hello")}).state(t, http.StatusAccepted)
	if st.ContentType != "text/plain; charset=UTF-8" {
		t.Errorf("content type: got %q, want it normalised to text/plain; charset=UTF-8", st.ContentType)
	}
	e.post(upload{key: "webp", contentType: "image/webp", body: []byte("webp")}).state(t, http.StatusAccepted)
}

func TestTooLarge(t *testing.T) {
	t.Parallel()
	const limit = 1 << 20
	e := setup(t, func(o *options) { o.maxUpload = limit })
	big := randomBytes(limit+1, 7)

	r := e.post(upload{key: "big", body: big})
	p := r.problem(t, http.StatusRequestEntityTooLarge, "content-too-large", "1048576")
	if p.MaxSize != limit {
		t.Errorf("max-size: got %d, want %d", p.MaxSize, limit)
	}
	// Without a Content-Length the limit holds while the body streams, past
	// the inline threshold into staging.
	e.post(upload{key: "big", stream: bytes.NewReader(big)}).problem(t, http.StatusRequestEntityTooLarge, "content-too-large")

	id := uploads.ID("alice", "big")
	if evs, _ := e.requests(id); len(evs) != 0 {
		t.Errorf("request events: got %d, want 0", len(evs))
	}
	if n := e.pg.Count(t, `SELECT count(*) FROM ingest_uploads WHERE id = $1`, id); n != 0 {
		t.Errorf("records: got %d, want 0", n)
	}
	// Exactly the limit is fine, streamed too.
	e.post(upload{key: "big", stream: bytes.NewReader(big[:limit])}).state(t, http.StatusAccepted)
}

func TestLargeUploadIsClaimChecked(t *testing.T) {
	t.Parallel()
	e := setup(t)
	body := randomBytes(3<<20, 1)
	id := uploads.ID("alice", "large")
	// Chunked, as a client streaming a file sends it.
	st := e.post(upload{key: "large", contentType: "application/octet-stream", stream: bytes.NewReader(body)}).state(t, http.StatusAccepted)
	if st.Size != int64(len(body)) || st.SHA256 != sha(body) {
		t.Errorf("state: got %d bytes with %s, want %d with %s", st.Size, st.SHA256, len(body), sha(body))
	}

	evs, _ := e.requests(id)
	if len(evs) != 1 {
		t.Fatalf("request events: got %d, want 1", len(evs))
	}
	wantRef := "nats-object://uploads-staging/" + id
	if ev := evs[0]; ev.DataRef != wantRef || len(ev.Data) != 0 || ev.SHA256 != sha(body) {
		t.Errorf("request event: got dataref %q, %d inline bytes, sha256 %s; want %s, none, %s", ev.DataRef, len(ev.Data), ev.SHA256, wantRef, sha(body))
	}
	if _, _, dataref := e.record(id); dataref != wantRef {
		t.Errorf("record dataref: got %q, want %s", dataref, wantRef)
	}
	store, err := e.js.ObjectStore(context.Background(), "uploads-staging")
	if err != nil {
		t.Fatal(err)
	}
	staged, err := store.GetBytes(context.Background(), id)
	if err != nil || !bytes.Equal(staged, body) {
		t.Fatalf("staged object: got %d bytes (%v), want the %d uploaded", len(staged), err, len(body))
	}
	status, err := store.Status(context.Background())
	if err != nil || status.TTL() != time.Hour {
		t.Errorf("staging bucket TTL: got %v (%v), want 1h", status.TTL(), err)
	}

	// A retry never stages again; a later one re-drives with the dataref.
	msgs := e.stagingMsgs()
	e.post(upload{key: "large", contentType: "application/octet-stream", body: body}).state(t, http.StatusAccepted)
	e.clock.Advance(2 * time.Minute)
	e.post(upload{key: "large", contentType: "application/octet-stream", body: body}).state(t, http.StatusAccepted)
	other := randomBytes(3<<20, 2)
	e.post(upload{key: "large", contentType: "application/octet-stream", body: other}).problem(t, http.StatusUnprocessableEntity, "idempotency-key-reused", "body")
	if got := e.stagingMsgs(); got != msgs {
		t.Errorf("staging bucket messages after retries: got %d, want %d", got, msgs)
	}
	if evs, _ := e.requests(id); len(evs) != 2 || evs[1].DataRef != wantRef {
		t.Errorf("request events after retries: got %d, want 2, the second with the dataref", len(evs))
	}
	if got := e.counter("blobref_ingest_staged_total", `outcome="staged"`); got != 1 {
		t.Errorf("staged_total: got %v, want 1", got)
	}
}

func TestStagedButUnrecordedIsReused(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := context.Background()
	if err := e.staging.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	store, err := e.js.ObjectStore(ctx, "uploads-staging")
	if err != nil {
		t.Fatal(err)
	}
	// An attempt that crashed between staging and recording left its object.
	body := randomBytes(1<<20, 3)
	id := uploads.ID("alice", "crashed")
	if _, err := store.PutBytes(ctx, id, body); err != nil {
		t.Fatal(err)
	}
	msgs := e.stagingMsgs()
	e.post(upload{key: "crashed", body: body}).state(t, http.StatusAccepted)
	if got := e.stagingMsgs(); got != msgs {
		t.Errorf("staging messages: got %d, want %d (nothing staged twice)", got, msgs)
	}
	if got := e.counter("blobref_ingest_staged_total", `outcome="reused"`); got != 1 {
		t.Errorf("staged_total{reused}: got %v, want 1", got)
	}
	if evs, _ := e.requests(id); len(evs) != 1 || evs[0].DataRef == "" {
		t.Errorf("request events: got %d, want 1 with a dataref", len(evs))
	}

	// Other bytes under an unrecorded object: it is removed, the client is
	// told to retry, and the retry stages afresh.
	id2 := uploads.ID("alice", "crashed-2")
	if _, err := store.PutBytes(ctx, id2, randomBytes(1<<20, 4)); err != nil {
		t.Fatal(err)
	}
	body2 := randomBytes(1<<20, 5)
	r := e.post(upload{key: "crashed-2", body: body2})
	r.problem(t, http.StatusServiceUnavailable, "unavailable", "retry")
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if _, err := store.GetInfo(ctx, id2); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("stale object: got %v, want it removed", err)
	}
	e.post(upload{key: "crashed-2", body: body2}).state(t, http.StatusAccepted)
	if staged, err := store.GetBytes(ctx, id2); err != nil || !bytes.Equal(staged, body2) {
		t.Errorf("restaged object: got %d bytes (%v), want the second body", len(staged), err)
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	e := setup(t)
	body := []byte("status")
	id := uploads.ID("alice", "s")
	e.post(upload{key: "s", body: body}).state(t, http.StatusAccepted)
	path := "/v1/uploads/" + id

	st := e.get(readerToken, path)
	st.problem(t, http.StatusNotFound, "not-found") // another caller's upload
	e.get(bobToken, path).problem(t, http.StatusNotFound, "not-found")
	e.get(aliceToken, "/v1/uploads/"+uploads.ID("alice", "unknown")).problem(t, http.StatusNotFound, "not-found")
	e.get(aliceToken, "/v1/uploads/not*an*id").problem(t, http.StatusNotFound, "not-found")

	pending := e.get(aliceToken, path).state(t, http.StatusOK)
	if pending.State != uploads.StatePending || pending.Steps.Accepted == nil || pending.Steps.Blob != nil {
		t.Errorf("pending: got %+v", pending)
	}
	req := e.awaitRequests(id, 1)[0]
	e.storeBlob(req)
	stored := e.get(aliceToken, path).state(t, http.StatusOK)
	if stored.State != uploads.StateStored || stored.Steps.Blob == nil || stored.Steps.Ref != nil {
		t.Errorf("stored: got %+v", stored)
	}
	// A dead letter of the blob_stored event does not fail an upload whose
	// reference is recorded.
	ref := e.complete(req)
	completed := e.get(aliceToken, path).state(t, http.StatusOK)
	if completed.State != uploads.StateCompleted || completed.Steps.Ref == nil || completed.Reference == nil || *completed.Reference != ref {
		t.Errorf("completed: got %+v, want the reference %+v", completed, ref)
	}

	// Failed: a dead letter and no reference.
	fid := uploads.ID("alice", "f")
	e.post(upload{key: "f", body: []byte("doomed")}).state(t, http.StatusAccepted)
	freq := e.awaitRequests(fid, 1)[0]
	d := e.deadLetter(freq, events.ReasonClaimMissing, "blob")
	failed := e.get(aliceToken, "/v1/uploads/"+fid).state(t, http.StatusOK)
	if failed.State != uploads.StateFailed || failed.DeadLetter == nil ||
		failed.DeadLetter.Reason != events.ReasonClaimMissing || failed.DeadLetter.Step != "blob" ||
		failed.DeadLetter.Message == "" || !failed.DeadLetter.At.Equal(d.Time) {
		t.Errorf("failed: got %+v (dead letter %+v), want the dead letter %+v", failed, failed.DeadLetter, d)
	}
	// A retry of a failed upload re-drives it (once REDRIVE_AFTER has
	// passed since the last publish) and is pending again.
	e.clock.Advance(time.Hour)
	redriven := e.post(upload{key: "f", body: []byte("doomed")}).state(t, http.StatusAccepted)
	if redriven.State != uploads.StatePending || redriven.DeadLetter != nil {
		t.Errorf("retry of a failed upload: got %+v, want pending again", redriven)
	}
}

func TestPreferWait(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id := uploads.ID("alice", "wait")
	done := make(chan reply, 1)
	go func() {
		done <- e.post(upload{key: "wait", body: []byte("wait for me"), header: http.Header{"Prefer": {"respond-async, wait=20"}}})
	}()
	req := e.awaitRequests(id, 1)[0]
	// A completed event of the id with other bytes is not this upload's
	// completion, and the completion of another upload is not either.
	other := *req
	other.Data = []byte("other bytes")
	other.SHA256 = sha(other.Data)
	e.publishCompleted(&other)
	e.post(upload{key: "wait-other", body: []byte("another upload")}).state(t, http.StatusAccepted)
	e.complete(e.awaitRequests(uploads.ID("alice", "wait-other"), 1)[0])
	ref := e.complete(req)
	var r reply
	select {
	case r = <-done:
	case <-time.After(timeout):
		t.Fatal("POST with Prefer: wait did not answer after the upload completed")
	}
	st := r.state(t, http.StatusCreated)
	if st.State != uploads.StateCompleted || st.Reference == nil || *st.Reference != ref {
		t.Errorf("201: got %+v, want completed with %+v", st, ref)
	}
	if st.Steps.Accepted == nil || st.Steps.Blob == nil || st.Steps.Ref == nil {
		t.Errorf("201: got steps %+v, want every step", st.Steps)
	}
	if got := r.header.Get("Preference-Applied"); got != "wait=10" {
		t.Errorf("Preference-Applied: got %q, want wait=10 (capped at WAIT_MAX)", got)
	}
	if r.header.Get("Location") != "/v1/uploads/"+id {
		t.Errorf("Location: got %q", r.header.Get("Location"))
	}

	// Nothing completes: 202 once the wait is over.
	start := time.Now()
	r = e.post(upload{key: "wait-2", body: []byte("nobody finishes me"), header: http.Header{"Prefer": {"wait=1"}}})
	if st := r.state(t, http.StatusAccepted); st.State != uploads.StatePending {
		t.Errorf("after the wait: got %+v, want pending", st)
	}
	if got := r.header.Get("Preference-Applied"); got != "wait=1" {
		t.Errorf("Preference-Applied: got %q, want wait=1", got)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Errorf("answered after %v, want after the 1s wait", waited)
	}
	// A retry of a completed upload answers at once with 200.
	r = e.post(upload{key: "wait", body: []byte("wait for me"), header: http.Header{"Prefer": {"wait=5"}}})
	if st := r.state(t, http.StatusOK); st.State != uploads.StateCompleted || r.header.Get("Preference-Applied") != "" {
		t.Errorf("retry of a completed upload: got %+v, Preference-Applied %q", st, r.header.Get("Preference-Applied"))
	}
	// wait=0 (as docs/api.md says) is no wait: 202 at once, without
	// Preference-Applied.
	r = e.post(upload{key: "wait-0", body: []byte("do not wait for me"), header: http.Header{"Prefer": {"wait=0"}}})
	if st := r.state(t, http.StatusAccepted); st.State != uploads.StatePending || r.header.Get("Preference-Applied") != "" {
		t.Errorf("wait=0: got %+v, Preference-Applied %q; want pending and no Preference-Applied", st, r.header.Get("Preference-Applied"))
	}
}

func TestJetStreamDownIs503ThenRetryPublishes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	body := []byte("published after the outage")
	id := uploads.ID("alice", "outage")

	e.nats.Shutdown()
	r := e.post(upload{key: "outage", body: body})
	r.problem(t, http.StatusServiceUnavailable, "unavailable", "retry")
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if strings.Contains(string(r.body), "nats") || strings.Contains(string(r.body), "context") {
		t.Errorf("503 body %s: want no dependency error text", r.body)
	}
	if n, published, _ := e.record(id); n != 0 || published {
		t.Errorf("record after the failed publish: got publish_count %d, published %v; want 0, false", n, published)
	}
	// The bytes wait in the record's outbox, and the key is free for a retry.
	if n := e.pg.Count(t, `SELECT count(*) FROM ingest_uploads WHERE id = $1 AND payload = $2 AND claimed_until IS NULL`, id, body); n != 1 {
		t.Error("record after the failed publish: want the bytes in the outbox and no claim")
	}

	e.nats.Restart()
	deadline := time.Now().Add(timeout)
	for {
		r = e.post(upload{key: "outage", body: body})
		if r.status == http.StatusAccepted || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := r.state(t, http.StatusAccepted)
	if st.Steps.Accepted == nil {
		t.Errorf("state after the retry: got %+v, want accepted", st)
	}
	// The first publish may have gone out from the reconnect buffer; with the
	// upload id as Nats-Msg-Id JetStream kept one of the two.
	evs, msgIDs := e.requests(id)
	if len(evs) != 1 || msgIDs[0] != id || !bytes.Equal(evs[0].Data, body) {
		t.Errorf("request events: got %d (%v), want 1 with Nats-Msg-Id %s", len(evs), msgIDs, id)
	}
	if n, published, _ := e.record(id); n != 1 || !published {
		t.Errorf("record: got publish_count %d, published %v; want 1, true", n, published)
	}
	if n := e.pg.Count(t, `SELECT count(*) FROM ingest_uploads WHERE id = $1 AND payload IS NULL`, id); n != 1 {
		t.Error("record once published: want the outbox cleared")
	}
}

func TestUnroutedRequestsAreProblems(t *testing.T) {
	t.Parallel()
	e := setup(t)
	del, err := http.NewRequest(http.MethodDelete, e.srv.URL+"/v1/uploads", nil)
	if err != nil {
		t.Fatal(err)
	}
	del.Header.Set("Authorization", "Bearer "+aliceToken)
	r := e.do(del)
	r.problem(t, http.StatusMethodNotAllowed, "method-not-allowed", "POST")
	if r.header.Get("Allow") == "" {
		t.Error("405 without Allow")
	}
	e.get(aliceToken, "/v2/nothing").problem(t, http.StatusNotFound, "not-found")
	if got := e.counter("blobref_ingest_requests_total", `route="unmatched"`); got != 2 {
		t.Errorf("requests_total{unmatched}: got %v, want 2", got)
	}
}

func TestProblemsHideDependencyErrors(t *testing.T) {
	t.Parallel()
	// Postgres gone: the pool is closed under the service.
	e := setup(t)
	e.pg.Pool.Close()
	r := e.post(upload{key: "pg", body: []byte("x")})
	r.problem(t, http.StatusServiceUnavailable, "unavailable")
	if strings.Contains(string(r.body), "pool") || strings.Contains(string(r.body), "closed") {
		t.Errorf("503 body %s: want no dependency error text", r.body)
	}
	e.get(aliceToken, "/v1/uploads/"+uploads.ID("alice", "pg")).problem(t, http.StatusServiceUnavailable, "unavailable")
}
