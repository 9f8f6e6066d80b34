package webhook_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/steptest"
	"github.com/blobref/blobref/services/notifier/internal/webhook"
)

// hooks is a receiver whose answer per path the test sets, counting the
// requests to each.
type hooks struct {
	srv    *httptest.Server
	mu     sync.Mutex
	status map[string]int
	count  map[string]int
}

func newHooks(t *testing.T) *hooks {
	h := &hooks{status: map[string]int{}, count: map[string]int{}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h.mu.Lock()
		h.count[r.URL.Path]++
		code := h.status[r.URL.Path]
		h.mu.Unlock()
		if code == http.StatusFound {
			w.Header().Set("Location", "/elsewhere")
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hooks) answer(path string, code int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.status[path] = code
}

func (h *hooks) requests(path string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count[path]
}

// setup returns a notifier of the endpoints file written from spec (owner
// id → path on the receiver) over a migrated schema of its own.
func setup(t *testing.T, h *hooks, endpoints string, allowPrivate bool) (*webhook.Notifier, *pgxpool.Pool) {
	t.Helper()
	dir := t.TempDir()
	write(t, dir+"/s.secret", "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
	write(t, dir+"/endpoints.json", strings.ReplaceAll(endpoints, "RX", h.srv.URL))
	eps, err := webhook.LoadEndpoints(dir+"/endpoints.json", true)
	if err != nil {
		t.Fatal(err)
	}
	_, url := testenv.NewSchema(t, "notify_")
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := webhook.Migrate(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	client := webhook.NewClient(5*time.Second, allowPrivate)
	t.Cleanup(client.CloseIdleConnections)
	return &webhook.Notifier{Endpoints: eps, Client: client, Pool: pool, Log: slog.New(slog.DiscardHandler)}, pool
}

func write(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// completed returns a completed event of a fresh upload of owner.
func completed(t *testing.T, owner string) *events.Event {
	t.Helper()
	id := testenv.ID("w")
	req, err := events.NewRequested(events.Request{ID: id, Source: "/test", Owner: owner, Subject: "s/" + id,
		ContentType: "text/plain", Data: []byte("hello " + id)})
	if err != nil {
		t.Fatal(err)
	}
	blob := events.Blob{Key: "uploads/" + id, Size: int64(len(req.Data)), SHA256: req.SHA256, ContentType: "text/plain"}
	stored, err := events.NewBlobStored(req, blob, "/test")
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.NewCompleted(stored, events.Reference{ID: id, Subject: req.Subject, Blob: blob, EventTime: req.Time}, "/test")
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

const twoEndpoints = `{"endpoints": [
	{"id": "one", "owner": "o", "url": "RX/one", "secret_file": "s.secret"},
	{"id": "two", "owner": "o", "url": "RX/two", "secret_file": "s.secret"}]}`

// A partial failure retries only the endpoint still waiting; once both are
// done the upload's marker is recorded and a republish sends nothing.
func TestRetrySendsOnlyToEndpointsStillWaiting(t *testing.T) {
	t.Parallel()
	h := newHooks(t)
	n, pool := setup(t, h, twoEndpoints, true)
	h.answer("/one", http.StatusNoContent)
	h.answer("/two", http.StatusServiceUnavailable)
	ev := completed(t, "o")
	ctx := context.Background()

	_, err := steptest.Work(ctx, pool, n.Step(), ev)
	var perm *step.PermanentError
	if err == nil || errors.As(err, &perm) || !strings.Contains(err.Error(), "endpoint two: answered 503") {
		t.Fatalf("first try: got %v, want a retryable failure of endpoint two", err)
	}
	h.answer("/two", http.StatusOK)
	w, err := steptest.Work(ctx, pool, n.Step(), ev)
	if err != nil || w.Kind != step.Done {
		t.Fatalf("second try: got %+v, %v, want done", w, err)
	}
	if got := w.Result.Deliveries; len(got) != 2 || got[0].Status != 0 || got[1].Status != http.StatusOK ||
		got[0].WebhookID != webhook.MessageID(ev.ID, "one") {
		t.Errorf("result: got %+v, want one recorded earlier, two delivered now", got)
	}
	w, err = steptest.Work(ctx, pool, n.Step(), ev) // the republished completion
	if err != nil || w.Kind != step.Skipped {
		t.Errorf("republish: got %+v, %v, want skipped", w, err)
	}
	if h.requests("/one") != 1 || h.requests("/two") != 2 {
		t.Errorf("requests: one %d, two %d; want 1 and 2", h.requests("/one"), h.requests("/two"))
	}
}

// 410 Gone ends the endpoint's delivery of the upload (it is not sent
// again); a redirect and any other 4xx are failures to retry; an owner
// without endpoints is done at once.
func TestStatuses(t *testing.T) {
	t.Parallel()
	h := newHooks(t)
	n, pool := setup(t, h, twoEndpoints, true)
	ctx := context.Background()
	h.answer("/one", http.StatusGone)
	h.answer("/two", http.StatusFound)
	ev := completed(t, "o")
	if _, err := steptest.Work(ctx, pool, n.Step(), ev); err == nil || !strings.Contains(err.Error(), "endpoint two: answered 302") {
		t.Fatalf("got %v, want endpoint two's 302 as a failure", err)
	}
	h.answer("/two", http.StatusUnauthorized)
	if _, err := steptest.Work(ctx, pool, n.Step(), ev); err == nil || !strings.Contains(err.Error(), "endpoint two: answered 401") {
		t.Fatalf("got %v, want endpoint two's 401 as a failure", err)
	}
	h.answer("/two", http.StatusAccepted)
	w, err := steptest.Work(ctx, pool, n.Step(), ev)
	if err != nil || w.Kind != step.Done || w.Result.Deliveries[0].Outcome != webhook.OutcomeGone {
		t.Fatalf("got %+v, %v, want done, endpoint one gone", w, err)
	}
	if h.requests("/one") != 1 || h.requests("/two") != 3 || h.requests("/elsewhere") != 0 {
		t.Errorf("requests: one %d, two %d, elsewhere %d; want 1, 3, 0", h.requests("/one"), h.requests("/two"), h.requests("/elsewhere"))
	}
	w, err = steptest.Work(ctx, pool, n.Step(), completed(t, "nobody"))
	if err != nil || w.Kind != step.Done || len(w.Result.Deliveries) != 0 {
		t.Errorf("owner without endpoints: got %+v, %v, want done with no delivery", w, err)
	}
}

// An endpoint the address check refuses dead-letters the upload at once,
// as delivery_failed, without the URL in the error.
func TestRefusedAddressIsPermanent(t *testing.T) {
	t.Parallel()
	h := newHooks(t)
	n, pool := setup(t, h, `{"endpoints": [{"id": "one", "owner": "o", "url": "RX/one?token=sekrit", "secret_file": "s.secret"}]}`, false)
	_, err := steptest.Work(context.Background(), pool, n.Step(), completed(t, "o"))
	var perm *step.PermanentError
	if !errors.As(err, &perm) || perm.Reason != webhook.ReasonDeliveryFailed || strings.Contains(err.Error(), "sekrit") {
		t.Errorf("got %v, want a permanent delivery_failed error without the URL", err)
	}
	if h.requests("/one") != 0 {
		t.Errorf("the receiver got %d requests, want none", h.requests("/one"))
	}
}
