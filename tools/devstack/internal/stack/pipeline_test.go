//go:build unix

package stack

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/internal/testenv"
)

// TestPipeline runs the real service binaries under the stack, sends the
// uploads that devstack suggests (the curl command exactly as printed, and
// the nats pub one's request) and waits for them to complete.
func TestPipeline(t *testing.T) {
	bin := testenv.BuildServices(t, "blobwriter", "refwriter", "ingest")
	dbURL := freshSchema(t)
	var ingest Service
	for _, svc := range DefaultServices() {
		if svc.Name == "ingest" {
			ingest = svc
		}
	}
	blobDir := filepath.Join(t.TempDir(), "blobs")
	// blobwriter's metrics port is taken, as by a node_exporter on 9100: it
	// gets a free one.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	out := &testenv.SyncBuffer{}
	t.Cleanup(func() { testenv.ShowLog(t, "stack", out.String()) })
	r := runStack(t, Config{
		DataDir:     t.TempDir(),
		DatabaseURL: dbURL,
		BlobURL:     (&url.URL{Scheme: "file", Path: blobDir, RawQuery: "create_dir=true"}).String(),
		BinDir:      bin,
		Services: []Service{
			{Name: "blobwriter", MetricsAddr: taken.Addr().String()},
			{Name: "refwriter", MetricsAddr: testenv.FreeAddr(t)},
			{Name: "ingest", MetricsAddr: testenv.FreeAddr(t), HTTPAddr: "127.0.0.1:0", Env: ingest.Env},
		},
		Env:          os.Environ(),
		Out:          out,
		ReadyTimeout: 2 * time.Minute,
		serveNATS:    natsProcess,
	})
	r.waitReady(t, 3*time.Minute)
	natsURL := r.st.NATSURL()
	fallback := regexp.MustCompile(`port \d+ is taken; blobwriter's metrics listens on (127\.0\.0\.1:\d+) instead`).FindStringSubmatch(out.String())
	if fallback == nil {
		t.Fatalf("the output does not say where blobwriter's metrics went instead of the taken %s", taken.Addr())
	}
	for _, want := range []string{"blobwriter is ready (http://" + fallback[1] + "/readyz)", "metrics (/metrics, /healthz, /readyz): blobwriter http://" + fallback[1]} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}

	// The curl command devstack printed, run as printed.
	var command string
	for line := range strings.Lines(out.String()) {
		if _, cmd, ok := strings.Cut(line, "devstack   |   curl "); ok {
			command = "curl " + strings.TrimSpace(cmd)
		}
	}
	if command == "" {
		t.Fatal("devstack printed no curl command")
	}
	curlOut, err := exec.Command("bash", "-c", command).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", command, err, curlOut)
	}
	if !strings.HasPrefix(string(curlOut), "HTTP/1.1 201 Created") || !strings.Contains(string(curlOut), `"state":"completed"`) {
		t.Errorf("%s: got\n%s\nwant 201 Created with the completed upload", command, curlOut)
	}
	sum := sha256.Sum256([]byte(DevCaller + "\nfirst-upload"))
	httpID := hex.EncodeToString(sum[:])[:32]
	if data, err := os.ReadFile(filepath.Join(blobDir, "uploads", httpID)); err != nil || string(data) != "hello" {
		t.Errorf("blob uploads/%s: got %q, %v, want \"hello\"", httpID, data, err)
	}

	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer nc.Close()
	var b [6]byte
	_, _ = rand.Read(b[:])
	id := "devstack-" + hex.EncodeToString(b[:])
	done, err := nc.SubscribeSync("uploads.completed." + id)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}

	// Publish exactly what the suggested `nats pub` line sends.
	publishDemo(t, natsURL, id)

	got, err := done.NextMsg(time.Minute)
	if err != nil {
		t.Fatalf("waiting for uploads.completed.%s: %v", id, err)
	}
	if typ := got.Header.Get("ce-type"); typ != "io.blobref.upload.completed.v1" {
		t.Errorf("completed event ce-type: got %q, want io.blobref.upload.completed.v1", typ)
	}
	if data, err := os.ReadFile(filepath.Join(blobDir, "uploads", id)); err != nil || string(data) != "hello" {
		t.Errorf("blob uploads/%s: got %q, %v, want \"hello\"", id, data, err)
	}
	if n := countRefs(t, dbURL, id); n != 1 {
		t.Errorf("upload_refs rows for %s: got %d, want 1", id, n)
	}
	nc.Close()

	r.stop()
	if err := r.waitExit(t, time.Minute); err != nil {
		t.Fatalf("Run after stop: got %v, want nil", err)
	}
	checkGone(t, r.st.PIDs(), natsURL)
	for _, want := range []string{"blobwriter stopped", "refwriter stopped", "ingest stopped", "NATS stopped"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// freshSchema creates a schema in the test database, dropped when the test
// ends, and returns a DATABASE_URL that uses it. The services migrate it
// themselves at start-up, as they do in devstack.
func freshSchema(t *testing.T) string {
	t.Helper()
	_, url := testenv.NewSchema(t, "devstack_")
	return url
}

func countRefs(t *testing.T, dbURL, id string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM upload_refs WHERE id = $1", id).Scan(&n); err != nil {
		t.Fatalf("count upload_refs: %v", err)
	}
	return n
}
