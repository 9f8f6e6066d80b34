package acceptfloor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/blobref/blobref/bench/internal/benchtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is what a test of the floor runs on: a schema of its own, a
// nats-server of its own, the table and the stream.
type env struct {
	pool *pgxpool.Pool
	js   jetstream.JetStream
}

func setup(t *testing.T) env {
	t.Helper()
	pool := benchtest.Schema(t, "floortest_")
	_, js := benchtest.JetStream(t)
	if err := Setup(t.Context(), pool, js); err != nil {
		t.Fatal(err)
	}
	return env{pool: pool, js: js}
}

// TestAccept posts uploads at once and finds each, once answered 202, in
// the table and in the stream with its bytes; then it stops the floor.
func TestAccept(t *testing.T) {
	t.Parallel()
	e := setup(t)
	httpLn, readyLn := benchtest.Listen(t), benchtest.Listen(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Deps{Pool: e.pool, JS: e.js, HTTP: httpLn, Ready: readyLn, Log: slog.New(slog.DiscardHandler)})
	}()

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("http://" + readyLn.Addr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("readyz: got %s, want 200", resp.Status)
	}

	const n = 40
	bodies := map[string][]byte{} // by id
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			body := bytes.Repeat([]byte{byte(i)}, 4<<10)
			resp, err := client.Post("http://"+httpLn.Addr().String()+"/v1/uploads?subject=x", "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				errs <- err
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			id, ok := strings.CutPrefix(resp.Header.Get("Location"), "/")
			if resp.StatusCode != http.StatusAccepted || !ok || id == "" {
				errs <- fmt.Errorf("got %s with Location %q, want 202 with /<id>", resp.Status, resp.Header.Get("Location"))
				return
			}
			mu.Lock()
			bodies[id] = body
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	stream, err := e.js.Stream(t.Context(), StreamName)
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range bodies {
		var got []byte
		if err := e.pool.QueryRow(t.Context(), "SELECT body FROM "+Table+" WHERE id = $1", id).Scan(&got); err != nil || !bytes.Equal(got, want) {
			t.Errorf("row %s: got %d bytes, %v; want the %d posted", id, len(got), err, len(want))
		}
		msg, err := stream.GetLastMsgForSubject(t.Context(), SubjectPrefix+id)
		if err != nil || !bytes.Equal(msg.Data, want) {
			t.Errorf("message %s: %v, or not the bytes posted", id, err)
		}
	}
	if len(bodies) != n {
		t.Errorf("got %d distinct ids, want %d", len(bodies), n)
	}

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: got %v, want nil after its context ended", err)
	}
}

// TestGroupCommit holds the table locked while the first batch is in
// Postgres, queues more uploads behind it, and finds them all inserted by
// one more statement.
func TestGroupCommit(t *testing.T) {
	t.Parallel()
	e := setup(t)
	rec := NewRecorder(e.pool)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- rec.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	tx, err := e.pool.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(t.Context(), "LOCK TABLE "+Table+" IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}

	const queued = 10
	results := make(chan error, queued+1)
	record := func(i int) { results <- rec.Record(t.Context(), fmt.Sprint("id-", i), []byte{byte(i)}) }
	go record(0)
	poll(t, "the first batch to start", func() bool { return rec.Batches() == 1 })
	for i := 1; i <= queued; i++ {
		go record(i)
	}
	poll(t, "the uploads to queue", func() bool { return len(rec.queue) == queued })
	if err := tx.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	for range queued + 1 {
		if err := <-results; err != nil {
			t.Error(err)
		}
	}
	if got := rec.Batches(); got != 2 {
		t.Errorf("got %d INSERTs for 1 upload and %d queued behind it, want 2", got, queued)
	}
	var rows int
	if err := e.pool.QueryRow(t.Context(), "SELECT count(*) FROM "+Table).Scan(&rows); err != nil || rows != queued+1 {
		t.Errorf("got %d rows (%v), want %d", rows, err, queued+1)
	}
}

// TestTooLarge: a body over MaxBody gets 413 and is neither recorded nor
// published.
func TestTooLarge(t *testing.T) {
	t.Parallel()
	h := &handler{log: slog.New(slog.DiscardHandler)}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, "/", bytes.NewReader(make([]byte, MaxBody+1)))
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	h.accept(w, req)
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("got %d, want 413", w.Code)
	}
}

// poll waits until cond holds, failing the test after a minute.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		<-tick.C
	}
}
