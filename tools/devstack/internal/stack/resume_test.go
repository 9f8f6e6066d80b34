//go:build unix

package stack

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestRestartResumesUnfinishedWork stops the stack (as Ctrl-C does) while
// an upload's reference step keeps failing, starts it again on the same
// store, database and bucket, and checks the upload finishes there: the
// blob is not written again, the reference is written once.
func TestRestartResumesUnfinishedWork(t *testing.T) {
	bin := testenv.BuildServices(t, "blobwriter", "refwriter", "ingest")
	dbURL := freshSchema(t)
	dataDir := t.TempDir()
	blobDir := filepath.Join(t.TempDir(), "blobs")
	blobURL := (&url.URL{Scheme: "file", Path: blobDir, RawQuery: "create_dir=true"}).String()
	config := func(refEnv map[string]string, out *testenv.SyncBuffer) Config {
		return Config{
			DataDir: dataDir, DatabaseURL: dbURL, BlobURL: blobURL, BinDir: bin,
			Services: []Service{
				{Name: "blobwriter", MetricsAddr: testenv.FreeAddr(t)},
				{Name: "refwriter", MetricsAddr: testenv.FreeAddr(t), Env: refEnv},
			},
			Env: os.Environ(), Out: out, ReadyTimeout: 2 * time.Minute,
			serveNATS: natsProcess,
		}
	}
	out := &testenv.SyncBuffer{}
	t.Cleanup(func() { testenv.ShowLog(t, "stack", out.String()) })

	// First run: the reference step fails every time.
	r := runStack(t, config(map[string]string{
		"BLOBREF_FAILPOINTS":    "ref/before-effect=error",
		"CONSUMER_BACKOFF_BASE": "100ms", "CONSUMER_BACKOFF_MAX": "200ms",
	}, out))
	r.waitReady(t, 3*time.Minute)
	id := fmt.Sprintf("resume-%d", time.Now().UnixNano()) // unique in the shared database
	publishDemo(t, r.st.NATSURL(), id)
	awaitRow(t, dbURL, `SELECT count(*) FROM step_markers WHERE upload_id = $1 AND step = 'blob'`, id)
	if n := countRefs(t, dbURL, id); n != 0 {
		t.Fatalf("reference rows while the ref step fails: got %d, want 0", n)
	}
	fi, err := os.Stat(filepath.Join(blobDir, "uploads", id))
	if err != nil {
		t.Fatalf("blob after the first run: %v", err)
	}
	r.stop()
	if err := r.waitExit(t, time.Minute); err != nil {
		t.Fatalf("first run: got %v, want a clean stop", err)
	}

	// Second run, same state, nothing failing: the upload finishes.
	r2 := runStack(t, config(nil, out))
	r2.waitReady(t, 3*time.Minute)
	awaitRow(t, dbURL, `SELECT count(*) FROM upload_refs WHERE id = $1`, id)
	fi2, err := os.Stat(filepath.Join(blobDir, "uploads", id))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Sys().(*syscall.Stat_t).Ino != fi2.Sys().(*syscall.Stat_t).Ino || !fi.ModTime().Equal(fi2.ModTime()) {
		t.Errorf("blob of %s was written again after the restart", id)
	}
	if n := countRefs(t, dbURL, id); n != 1 {
		t.Errorf("reference rows: got %d, want 1", n)
	}
	r2.stop()
	if err := r2.waitExit(t, time.Minute); err != nil {
		t.Fatalf("second run: got %v, want a clean stop", err)
	}
}

// publishDemo publishes devstack's demo upload as id.
func publishDemo(t *testing.T, natsURL, id string) {
	t.Helper()
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	demo := DemoUpload(id, time.Now())
	msg := nats.NewMsg(demo.Subject)
	msg.Data = demo.Data
	for _, h := range demo.Headers {
		msg.Header[h[0]] = []string{h[1]}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("publish %s: %v", demo.Subject, err)
	}
}

// awaitRow polls a counting query until it counts at least one row.
func awaitRow(t *testing.T, dbURL, query, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for {
		var n int
		if err := conn.QueryRow(ctx, query, id).Scan(&n); err != nil {
			t.Fatalf("%s: %v", query, err)
		}
		if n > 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s for %s: no row after 2 minutes", query, id)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
