package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/steptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// timeout is the deadline of every wait, the suite's usual one.
const timeout = 30 * time.Second

// TestAuditStep runs the step under the real runner (package steptest)
// against a nats-server process and a Postgres schema: a completed upload
// appends its line once, and the completion republished appends nothing.
func TestAuditStep(t *testing.T) {
	t.Parallel()
	_, js := testenv.StartNATS(t).Connect()
	pool := stepSchema(t)
	path := filepath.Join(t.TempDir(), "audit.log")
	h := steptest.New(t, js, pool, Audit(path), step.Options{})
	h.Start()

	ev := completed(t, "u1")
	if res := h.Handle(ev); res.Outcome.Kind != step.Done || res.Emitted != nil {
		t.Fatalf("first delivery: got %v emitting %v, want done emitting nothing", res.Outcome.Kind, res.Emitted)
	}
	want := "u1 alice users/1/avatar uploads/u1\n"
	if got := lines(t, path); got != want {
		t.Fatalf("audit log: got %q, want %q", got, want)
	}
	if res := h.Handle(ev); res.Outcome.Kind != step.Skipped { // a new message of the same upload
		t.Fatalf("republished: got %v, want skipped", res.Outcome.Kind)
	}
	if got := lines(t, path); got != want {
		t.Errorf("audit log after the republish: got %q, want %q", got, want)
	}
}

// TestAuditLogService runs the example's binary as a deployment would,
// against a nats-server process and a Postgres schema of its own (the
// service migrates its step tables itself).
func TestAuditLogService(t *testing.T) {
	t.Parallel()
	bin := t.TempDir()
	if err := testenv.Build(bin, "examples/auditlog"); err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	_, js := n.Connect()
	_, dbURL := testenv.NewSchema(t, "auditlog_")
	path := filepath.Join(t.TempDir(), "audit.log")
	metrics := testenv.FreeAddr(t)
	start(t, filepath.Join(bin, "auditlog"), "NATS_URL="+n.URL(), "DATABASE_URL="+dbURL,
		"METRICS_ADDR="+metrics, "AUDIT_LOG="+path, "LOG_FORMAT=text")
	await(t, "auditlog ready", func() bool {
		resp, err := http.Get("http://" + metrics + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	outcomes := func(kind string) float64 {
		return testenv.ScrapeCounter(t, "http://"+metrics+"/metrics", "blobref_step_messages_total", `step="audit"`, `outcome="`+kind+`"`)
	}

	ev := completed(t, "u1")
	testenv.Publish(t, js, ev, "u1-completed")
	await(t, "the completion done", func() bool { return outcomes("done") == 1 })
	want := "u1 alice users/1/avatar uploads/u1\n"
	if got := lines(t, path); got != want {
		t.Fatalf("audit log: got %q, want %q", got, want)
	}

	testenv.Publish(t, js, ev, "") // republished: a new message, not de-duplicated
	await(t, "the republished completion skipped", func() bool { return outcomes("skipped") == 1 })
	if got := lines(t, path); got != want {
		t.Errorf("audit log after the republish: got %q, want %q", got, want)
	}
	if got := outcomes("done"); got != 1 {
		t.Errorf("done: got %v, want 1", got)
	}
}

// completed is the completed event of upload id, as refwriter publishes it.
func completed(t *testing.T, id string) *events.Event {
	t.Helper()
	req, err := events.NewRequested(events.Request{ID: id, Source: events.SourceIngest, Owner: "alice",
		Subject: "users/1/avatar", ContentType: "text/plain", Data: []byte("hello " + id)})
	if err != nil {
		t.Fatal(err)
	}
	b := events.Blob{Key: events.DefaultKeyPrefix + id, Size: int64(len(req.Data)), SHA256: req.SHA256, ContentType: req.ContentType}
	stored, err := events.NewBlobStored(req, b, events.SourceBlobWriter)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.NewCompleted(stored, events.Reference{ID: id, Subject: req.Subject, Blob: b, EventTime: req.Time}, events.SourceRefWriter)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// stepSchema is a Postgres schema of the test's own holding the step tables.
func stepSchema(t *testing.T) *pgxpool.Pool {
	t.Helper()
	_, url := testenv.NewSchema(t, "auditlog_")
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if err := step.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

// lines returns the audit log's contents.
func lines(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// start runs the binary with env added to the test's environment until the
// test's cleanup stops it with SIGTERM, as a deployment does.
func start(t *testing.T, bin string, env ...string) {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env...)
	out := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("auditlog: %v", err)
		}
		if t.Failed() {
			t.Logf("auditlog's log:\n%s", strings.TrimSpace(out.String()))
		}
	})
}

// await waits up to timeout for cond.
func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
	}
}
