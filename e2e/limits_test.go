package e2e

// Slow and greedy clients against the real ingest binary: slow bodies hold
// no Postgres connection and do not delay anyone else, a stalled body ends
// with 408, a caller past its limits or its staging quota gets 429, and a
// request that finds the Postgres pool exhausted gets 503 instead of
// queueing; every refusal carries Retry-After where a retry can succeed.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
)

// rawUpload is a POST to ingest over a connection of its own, whose body
// the test sends when it likes: a slow or stalled client.
type rawUpload struct {
	t    *testing.T
	conn net.Conn
}

// openUpload sends the headers of a POST as c with key and a
// Content-Length of size, and first, the start of the body.
func (pr *proc) openUpload(t *testing.T, c caller, key string, size int, first []byte) *rawUpload {
	t.Helper()
	conn, err := net.Dial("tcp", pr.httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	head := fmt.Sprintf("POST /v1/uploads?subject=users/1/avatar HTTP/1.1\r\nHost: ingest\r\nAuthorization: Bearer %s\r\n"+
		"Idempotency-Key: %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", c.token, key, size)
	if _, err := conn.Write(append([]byte(head), first...)); err != nil {
		t.Fatal(err)
	}
	return &rawUpload{t: t, conn: conn}
}

func (u *rawUpload) write(b []byte) error {
	_, err := u.conn.Write(b)
	return err
}

// answer reads the response, waiting as long as the suite waits.
func (u *rawUpload) answer() (reply, bool) {
	u.t.Helper()
	if err := u.conn.SetReadDeadline(time.Now().Add(2 * time.Minute)); err != nil {
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
	return reply{status: resp.StatusCode, header: resp.Header, body: body}, resp.Close
}

// answered reports whether the server has answered or closed the
// connection, without waiting for it.
func (u *rawUpload) answered() bool {
	if err := u.conn.SetReadDeadline(time.Now().Add(time.Millisecond)); err != nil {
		return true
	}
	var b [1]byte
	_, err := u.conn.Read(b[:])
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// retryPostWhile sends u as retryPost does, and retries while the answer
// is status too, honouring Retry-After, for up to two minutes.
func (pr *proc) retryPostWhile(t *testing.T, u upload, key string, status int, header ...string) reply {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		r := pr.retryPost(t, u, key, header...)
		if r.status != status {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("POST %s: still %d %s after two minutes of retries", key, r.status, r.body)
		}
		wait := time.Second
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err == nil {
			wait = time.Duration(s) * time.Second
		}
		time.Sleep(wait)
	}
}

// awaitInFlight polls ingest's metrics until n requests of route are being
// handled.
func (pr *proc) awaitInFlight(t *testing.T, route string, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		got := pr.metric(t, "blobref_ingest_requests_in_flight", `route="`+route+`"`)
		if got >= float64(n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("requests in flight on %s: got %v, want %d", route, got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// 80 clients sending their bodies at 1 byte every 2 s (from two callers,
// under the default per-caller limits) leave a normal upload answering 201
// while every one of the 80 is still open. The normal upload's latency is
// logged, not asserted: it is a figure, not a pass criterion.
func TestIngestSlowClientsDoNotDelayOthers(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	p.start("blobwriter")
	p.start("refwriter")
	slowA, slowB := caller{"slow-a", "slowAQ7vX9pL2mN8rT4wY6bC1dF5gH7jK0s"}, caller{"slow-b", "slowBQ7vX9pL2mN8rT4wY6bC1dF5gH7jK0s"}
	// The slow bodies' budget outlasts the test: what is tested is that they
	// delay nobody, not when they are cut (TestIngestStalledBodyIs408).
	app := testenv.ID("slow")
	in := p.startIngest("", tokensOf(alice, slowA, slowB), "BODY_READ_TIMEOUT=10m",
		"DATABASE_URL="+p.pg.URL+"&application_name="+app)

	const slow = 80
	var clients []*rawUpload
	for i := range slow {
		c := slowA
		if i%2 == 1 {
			c = slowB
		}
		clients = append(clients, in.openUpload(t, c, fmt.Sprintf("slow-%d", i), 1000, []byte("s")))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() {
			tick := time.NewTicker(2 * time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					if c.write([]byte("s")) != nil {
						return
					}
				}
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	in.awaitInFlight(t, "POST /v1/uploads", slow)

	u := newUpload("normal", 6)
	start := time.Now()
	r := in.upload(t, alice, u.Subject, "normal-key", u.Data, "Prefer", "wait=30")
	latency := time.Since(start)
	r.state(t, http.StatusCreated).checkCompleted(t, r, u)
	t.Logf("a normal 6-byte upload with Prefer: wait beside %d slow bodies: 201 after %v", slow, latency)

	open := 0
	for _, c := range clients {
		if !c.answered() {
			open++
		}
	}
	if open != slow {
		t.Errorf("slow bodies still open once the normal upload answered: got %d, want %d", open, slow)
	}
	if got := in.metric(t, "blobref_ingest_requests_in_flight", `route="POST /v1/uploads"`); got < slow {
		t.Errorf("slow requests in flight: got %v, want %d", got, slow)
	}
	// No slow body holds a Postgres connection: none of ingest's is busy
	// while they stream.
	if busy := p.pg.Count(t, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'`, app); busy != 0 {
		t.Errorf("ingest's Postgres connections busy while the slow bodies stream: %d, want 0", busy)
	}
}

// A body that stops arriving ends with 408 after BODY_READ_TIMEOUT, the
// connection closed; nothing is recorded, and the client's retry uploads.
func TestIngestStalledBodyIs408(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	in := p.startIngest("", "BODY_READ_TIMEOUT=1s")
	stalled := in.openUpload(t, caller{ingestCaller, ingestToken}, "stalled", 100, []byte("only ten b"))
	r, closed := stalled.answer()
	r.problem(t, http.StatusRequestTimeout, "request-timeout")
	if !closed {
		t.Error("408 without Connection: close")
	}
	if n := p.pg.Count(t, `SELECT count(*) FROM ingest_uploads`); n != 0 {
		t.Errorf("records: got %d, want 0", n)
	}
	u := newUpload("stalled", 100)
	in.post(t, u, "stalled").state(t, http.StatusAccepted)
}

// A caller past its request rate, its uploads in progress or its staging
// quota is answered 429 with Retry-After; other callers are not, and once
// the cause is gone the caller's retry succeeds.
func TestIngestCallerLimitsAre429(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	p.start("refwriter")
	self := caller{ingestCaller, ingestToken}
	checkRetryAfter := func(name string, r reply) {
		t.Helper()
		if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
			t.Errorf("%s: Retry-After %q, want a number of seconds", name, r.header.Get("Retry-After"))
		}
	}

	t.Run("rate", func(t *testing.T) {
		in := p.startIngest("", tokensOf(alice), "CALLER_RATE=0.01", "CALLER_BURST=2")
		for range 2 {
			in.currentReference(t, self, "users/1/avatar").problem(t, http.StatusNotFound, "not-found")
		}
		r := in.currentReference(t, self, "users/1/avatar")
		r.problem(t, http.StatusTooManyRequests, "too-many-requests")
		checkRetryAfter("rate", r)
		in.upload(t, self, "users/1/avatar", "over-rate", []byte("x")).problem(t, http.StatusTooManyRequests, "too-many-requests")
		in.currentReference(t, alice, "users/1/avatar").problem(t, http.StatusNotFound, "not-found")
	})

	t.Run("uploads in progress", func(t *testing.T) {
		in := p.startIngest("", tokensOf(alice), "CALLER_MAX_CONCURRENT=1")
		u := newUpload("open", 100)
		open := in.openUpload(t, self, "open", len(u.Data), u.Data[:10])
		in.awaitInFlight(t, "POST /v1/uploads", 1)
		r := in.post(t, newUpload("second", 100), "second")
		r.problem(t, http.StatusTooManyRequests, "too-many-requests")
		checkRetryAfter("uploads in progress", r)
		in.upload(t, alice, "users/1/avatar", "alice-1", []byte("alice")).state(t, http.StatusAccepted)
		if err := open.write(u.Data[10:]); err != nil {
			t.Fatal(err)
		}
		if r, _ := open.answer(); r.status != http.StatusAccepted {
			t.Fatalf("the open upload: got %d %s, want 202", r.status, r.body)
		}
		in.post(t, newUpload("second", 100), "second").state(t, http.StatusAccepted)
	})

	t.Run("staging quota", func(t *testing.T) {
		// blobwriter is down: a staged upload stays staged, not stored.
		in := p.startIngest("", tokensOf(alice), "CALLER_MAX_STAGED_BYTES=3MiB", "MAX_UPLOAD_SIZE=3MiB")
		first := newUpload("quota-1", 2<<20)
		in.post(t, first, "quota-1").state(t, http.StatusAccepted)
		second := newUpload("quota-2", 2<<20)
		r := in.post(t, second, "quota-2")
		r.problem(t, http.StatusTooManyRequests, "staging-quota-exceeded")
		checkRetryAfter("staging quota", r)
		if n := p.pg.Count(t, `SELECT count(*) FROM ingest_uploads WHERE id = $1`, ingestID("quota-2")); n != 0 {
			t.Errorf("the refused upload was recorded")
		}
		in.upload(t, alice, "users/1/avatar", "alice-large", second.Data).state(t, http.StatusAccepted)

		// Once the first is stored and referenced, its bytes no longer
		// count: the retry, honouring Retry-After, goes through.
		p.start("blobwriter")
		second.Subject = "users/quota-2/avatar"
		r = in.retryPostWhile(t, second, "quota-2", http.StatusTooManyRequests, "Prefer", "wait=30")
		r.state(t, http.StatusCreated).checkCompleted(t, r, second)
	})
}

// A request that finds the Postgres pool exhausted for longer than
// DATABASE_ACQUIRE_TIMEOUT is answered 503 with Retry-After instead of
// waiting without end; the request holding the connection finishes once
// it is free.
func TestIngestPoolExhaustedIs503(t *testing.T) {
	t.Parallel()
	p := newPipeline(t)
	in := p.startIngest("", "DATABASE_URL="+p.pg.URL+"&pool_max_conns=1", "DATABASE_ACQUIRE_TIMEOUT=300ms", "COMPLETER_INTERVAL=1h")
	ctx := context.Background()
	// The completer's round at start-up must not be the statement that
	// waits for the lock on the one connection: wait for it to end (and no
	// other runs within the hour).
	deadline := time.Now().Add(time.Minute)
	for in.metric(t, "blobref_ingest_completer_rounds_total") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the completer's first round did not end within a minute")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The test's transaction locks the table: ingest's one connection
	// hangs in the first upload's insert.
	tx, err := p.pg.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `LOCK TABLE ingest_uploads IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	first := make(chan reply, 1)
	go func() { first <- in.post(t, newUpload("first", 100), "first") }()
	deadline = time.Now().Add(time.Minute)
	for p.pg.Count(t, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO ingest_uploads%'`) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first upload did not reach the locked table")
		}
		time.Sleep(20 * time.Millisecond)
	}

	for name, r := range map[string]reply{
		"POST": in.post(t, newUpload("second", 100), "second"),
		"GET":  in.get(t, "/v1/uploads/"+ingestID("first")),
	} {
		r.problem(t, http.StatusServiceUnavailable, "overloaded")
		if r.header.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", name)
		}
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	(<-first).state(t, http.StatusAccepted)
	in.retryPost(t, newUpload("second", 100), "second").state(t, http.StatusAccepted)
}
