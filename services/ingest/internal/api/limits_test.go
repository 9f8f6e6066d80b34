package api_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/services/ingest/internal/api"
	"github.com/blobref/blobref/services/ingest/internal/uploads"
)

// rawUpload is a POST sent over a connection of its own, byte by byte as
// the test decides: a slow or stalled client.
type rawUpload struct {
	t    *testing.T
	conn net.Conn
}

// openUpload sends the headers of a POST of key with a Content-Length of
// size, and first, the start of its body.
func (e *env) openUpload(t *testing.T, token, key string, size int, first []byte) *rawUpload {
	t.Helper()
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	head := fmt.Sprintf("POST /v1/uploads?subject=users/42/avatar HTTP/1.1\r\nHost: ingest\r\nAuthorization: Bearer %s\r\n"+
		"Idempotency-Key: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", token, key, size)
	if _, err := conn.Write(append([]byte(head), first...)); err != nil {
		t.Fatal(err)
	}
	return &rawUpload{t: t, conn: conn}
}

func (u *rawUpload) write(b []byte) error {
	_, err := u.conn.Write(b)
	return err
}

// answer reads the response, waiting for it as long as the suite waits.
func (u *rawUpload) answer() reply {
	u.t.Helper()
	if err := u.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		u.t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(u.conn), nil)
	if err != nil {
		u.t.Fatalf("reading the answer: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		u.t.Fatalf("reading the answer: %v", err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: body, close: resp.Close}
}

// A body that stops arriving, or trickles in below the minimum rate, ends
// its request with 408 and closes the connection; nothing is recorded, and
// no Postgres connection is held while it is awaited.
func TestSlowBodyIs408(t *testing.T) {
	t.Parallel()
	const idle = 3 * time.Second
	e := setup(t, func(o *options) {
		o.body = api.BodyTimeouts{Idle: idle, MinRate: 1 << 10}
		o.poolConns = 4
	})

	stalled := e.openUpload(t, aliceToken, "stalled", 100, []byte("only ten b"))
	small := e.openUpload(t, aliceToken, "large-stalled", 2<<20, randomBytes(700<<10, 1)) // past the inline threshold: staging
	e.awaitRows(`SELECT count(*) FROM ingest_leases WHERE id = $1`, 1, uploads.ID("alice", "large-stalled"))
	// The lease's round trip may still be handing its connection back; a
	// connection held while the bodies stall would stay held until they
	// time out.
	stalling := time.Now().Add(idle / 2)
	for n := e.svcPool.Stat().AcquiredConns(); n != 0; n = e.svcPool.Stat().AcquiredConns() {
		if time.Now().After(stalling) {
			t.Fatalf("%d Postgres connections held while bodies stall, want none", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for name, u := range map[string]*rawUpload{"stalled": stalled, "stalled while staging": small} {
		r := u.answer()
		r.problem(t, http.StatusRequestTimeout, "request-timeout", "Idempotency-Key")
		if !r.close {
			t.Errorf("%s: 408 without Connection: close", name)
		}
	}

	// One byte every 50 ms: 20 bytes/s, below the minimum of 1 KiB/s.
	trickle := e.openUpload(t, aliceToken, "trickle", 1000, nil)
	go func() {
		for range 1000 {
			if trickle.write([]byte("x")) != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	trickle.answer().problem(t, http.StatusRequestTimeout, "request-timeout")

	if n := e.pg.Count(t, `SELECT count(*) FROM ingest_uploads`); n != 0 {
		t.Errorf("records: got %d, want 0", n)
	}
	if got := e.counter("blobref_ingest_requests_total", `code="408"`); got != 3 {
		t.Errorf("requests_total{408}: got %v, want 3", got)
	}
	// A body that keeps coming is not cut, however long it takes.
	e.post(upload{key: "steady", body: randomBytes(3<<20, 2)}).state(t, http.StatusAccepted)
}

// Past its rate a caller is answered 429 with Retry-After; other callers
// are not.
func TestCallerRateIs429(t *testing.T) {
	t.Parallel()
	e := setup(t, func(o *options) { o.limits = api.CallerLimits{Rate: 0.001, Burst: 2} })
	e.post(upload{key: "r1", body: []byte("1")}).state(t, http.StatusAccepted)
	e.get(aliceToken, "/v1/uploads/"+uploads.ID("alice", "r1")).state(t, http.StatusOK)
	for _, r := range []reply{e.post(upload{key: "r2", body: []byte("2")}), e.get(aliceToken, referencePath("users/42/avatar"))} {
		r.problem(t, http.StatusTooManyRequests, "too-many-requests", "requests per second")
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
			t.Errorf("Retry-After: got %q, want a number of seconds", r.header.Get("Retry-After"))
		}
	}
	if n := e.pg.Count(t, `SELECT count(*) FROM ingest_uploads WHERE id = $1`, uploads.ID("alice", "r2")); n != 0 {
		t.Errorf("the refused upload was recorded")
	}
	e.post(upload{token: bobToken, key: "r1", body: []byte("1")}).state(t, http.StatusAccepted)
}

// Past its uploads in progress a caller is answered 429 with Retry-After;
// once one ends, the next is taken.
func TestCallerConcurrencyIs429(t *testing.T) {
	t.Parallel()
	e := setup(t, func(o *options) { o.limits = api.CallerLimits{MaxConcurrent: 1} })
	open := e.openUpload(t, aliceToken, "open", 2<<20, randomBytes(700<<10, 3))
	e.awaitRows(`SELECT count(*) FROM ingest_leases WHERE id = $1`, 1, uploads.ID("alice", "open"))

	r := e.post(upload{key: "second", body: []byte("second")})
	r.problem(t, http.StatusTooManyRequests, "too-many-requests", "1 uploads in progress")
	if r.header.Get("Retry-After") != "1" {
		t.Errorf("Retry-After: got %q, want 1", r.header.Get("Retry-After"))
	}
	e.post(upload{token: bobToken, key: "second", body: []byte("bob's")}).state(t, http.StatusAccepted)

	if err := open.write(randomBytes((2<<20)-(700<<10), 4)); err != nil {
		t.Fatal(err)
	}
	open.answer().state(t, http.StatusAccepted)
	e.post(upload{key: "second", body: []byte("second")}).state(t, http.StatusAccepted)
}

// A caller's large bodies in flight, being staged or staged and not yet
// stored, are bounded: past the quota the upload is 429 before anything is
// staged; the quota frees up when the uploads complete.
func TestStagedQuota(t *testing.T) {
	t.Parallel()
	quota := &uploads.StagedQuota{Limit: 3 << 20, Hold: time.Hour}
	e := setup(t, func(o *options) { o.quota = quota })
	large := func(seed byte) []byte { return randomBytes(2<<20, seed) }

	open := e.openUpload(t, aliceToken, "first", 2<<20, large(1)[:700<<10])
	e.awaitRows(`SELECT count(*) FROM ingest_leases WHERE id = $1`, 1, uploads.ID("alice", "first"))
	if got := quota.InFlight("alice"); got != 2<<20 {
		t.Errorf("in flight while the first streams: got %d, want %d", got, 2<<20)
	}
	r := e.post(upload{key: "announced", contentType: "application/octet-stream", body: large(2)})
	p := r.problem(t, http.StatusTooManyRequests, "staging-quota-exceeded", strconv.Itoa(3<<20))
	if p.MaxSize != 3<<20 || r.header.Get("Retry-After") == "" {
		t.Errorf("429: got max-size %d, Retry-After %q; want the quota and a Retry-After", p.MaxSize, r.header.Get("Retry-After"))
	}
	// The first body's staging makes the bucket; until then nothing is
	// staged at all.
	store, err := e.js.ObjectStore(context.Background(), "uploads-staging")
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
	case err != nil:
		t.Fatal(err)
	default:
		if info, err := store.GetInfo(context.Background(), uploads.ID("alice", "announced")); err == nil {
			t.Errorf("the announced body was staged (%d bytes), want it refused before staging", info.Size)
		}
	}
	// Without a Content-Length the body is charged as it arrives, and
	// refused once it goes over.
	e.post(upload{key: "chunked", contentType: "application/octet-stream", stream: bytes.NewReader(large(3))}).
		problem(t, http.StatusTooManyRequests, "staging-quota-exceeded")
	if got := quota.InFlight("alice"); got != 2<<20 {
		t.Errorf("in flight after the refused ones: got %d, want %d (the first only)", got, 2<<20)
	}
	// Inline bodies are not charged, nor another caller's.
	e.post(upload{key: "small", body: []byte("small")}).state(t, http.StatusAccepted)
	e.post(upload{token: bobToken, key: "large", contentType: "application/octet-stream", body: large(4)}).state(t, http.StatusAccepted)

	if err := open.write(large(1)[700<<10:]); err != nil {
		t.Fatal(err)
	}
	open.answer().state(t, http.StatusAccepted)
	if got := quota.InFlight("alice"); got != 2<<20 {
		t.Errorf("in flight once staged and recorded: got %d, want %d (held until stored)", got, 2<<20)
	}
	e.post(upload{key: "announced", contentType: "application/octet-stream", body: large(2)}).
		problem(t, http.StatusTooManyRequests, "staging-quota-exceeded")

	// The first completes: its bytes no longer count.
	e.complete(e.awaitRequests(uploads.ID("alice", "first"), 1)[0])
	deadline := time.Now().Add(timeout)
	for quota.InFlight("alice") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("in flight after the upload completed: got %d, want 0", quota.InFlight("alice"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.post(upload{key: "announced", contentType: "application/octet-stream", body: large(2)}).state(t, http.StatusAccepted)
}

// A request that finds every Postgres connection taken for longer than
// the bounded wait is answered 503 with Retry-After, and does not queue;
// the request holding the connection finishes once it is free.
func TestPoolExhaustedIs503(t *testing.T) {
	t.Parallel()
	e := setup(t, func(o *options) {
		o.poolConns = 1
		o.poolWait = 200 * time.Millisecond
	})
	ctx := context.Background()
	// The test's transaction locks the table, so that the service's one
	// connection hangs in the first upload's insert.
	tx, err := e.pg.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE ingest_uploads IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	first := make(chan reply, 1)
	go func() { first <- e.post(upload{key: "first", body: []byte("first")}) }()
	deadline := time.Now().Add(timeout)
	for e.svcPool.Stat().AcquiredConns() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the first upload did not take the pool's connection")
		}
		time.Sleep(10 * time.Millisecond)
	}

	for name, r := range map[string]reply{
		"POST": e.post(upload{key: "second", body: []byte("second")}),
		"GET":  e.get(aliceToken, "/v1/uploads/"+uploads.ID("alice", "first")),
	} {
		r.problem(t, http.StatusServiceUnavailable, "overloaded", "retry")
		if r.header.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", name)
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	(<-first).state(t, http.StatusAccepted)
	e.post(upload{key: "second", body: []byte("second")}).state(t, http.StatusAccepted)
}
