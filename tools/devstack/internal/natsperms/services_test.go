//go:build unix

package natsperms

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
)

// TestServicesWithTheirUsers runs the real service binaries against a
// server running nats.conf, each as its own NATS user with NATS_SETUP=off,
// as compose and the Kubernetes manifests run them: they wait until
// `blobrefctl setup` (the real binary, as user setup) has created the
// streams, the staging bucket and the consumers. Then it carries uploads
// through ingest, blobwriter and refwriter: inline and claim-checked,
// status reads (which look up dead letters), a retry, Prefer: wait, and
// dead letters from both consumers. The server must refuse none of what
// they do, and each must shut down cleanly.
func TestServicesWithTheirUsers(t *testing.T) {
	t.Parallel()
	bin := testenv.BuildServices(t, "ingest", "blobwriter", "refwriter")
	if err := testenv.Build(bin, "tools/blobrefctl"); err != nil {
		t.Fatal(err)
	}
	_, dbURL := testenv.NewSchema(t, "perm_")
	n := startServer(t, confPath(t))
	blobURL := (&url.URL{Scheme: "file", Path: filepath.Join(t.TempDir(), "blobs"), RawQuery: "create_dir=true"}).String()
	common := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"), "TMPDIR=" + os.TempDir(),
		"NATS_URL=" + n.url(), "DATABASE_URL=" + dbURL, "LOG_FORMAT=text", "LOG_LEVEL=info", "NATS_SETUP=off",
	}
	as := func(user string, env ...string) []string {
		return append(append(env, common...), "NATS_USER="+user, "NATS_PASSWORD="+passwords[user])
	}
	// blobwriter reads its password from a file, as on Kubernetes.
	pwFile := filepath.Join(t.TempDir(), "nats-password")
	writeFile(t, pwFile, passwords[blobwriter]+"\n")
	api := "http://" + testenv.FreeAddr(t)
	ing := startService(t, bin, ingest, as(ingest,
		"HTTP_ADDR="+strings.TrimPrefix(api, "http://"), "METRICS_ADDR="+testenv.FreeAddr(t),
		"AUTH_TOKENS="+permToken+"=perm", "INLINE_THRESHOLD=64KiB"))
	bw := startService(t, bin, blobwriter, append([]string{
		"BLOB_URL=" + blobURL, "METRICS_ADDR=" + testenv.FreeAddr(t),
		"NATS_USER=" + blobwriter, "NATS_PASSWORD_FILE=" + pwFile}, common...))

	// Before setup they wait, not ready, and say what creates what they
	// wait for.
	for _, p := range []*process{ing, bw} {
		p.awaitOutput(t, "blobrefctl setup")
		if p.ready() {
			t.Errorf("%s is ready before blobrefctl setup ran", p.name)
		}
	}
	if _, err := connect(t, n.url(), admin).js.Stream(t.Context(), events.StreamName); err == nil {
		t.Fatal("UPLOADS exists before blobrefctl setup ran: a service created it")
	}
	setupOut, err := runSetup(bin, append(common, "NATS_USER="+setup, "NATS_PASSWORD="+passwords[setup]))
	if err != nil {
		t.Fatalf("blobrefctl setup: %v\n%s", err, setupOut)
	}
	ing.awaitReady(t)
	bw.awaitReady(t)

	// Without refwriter, uploads stop at "stored": ingest's status reads
	// their (absent) dead letters meanwhile.
	small := upload(t, api, "small", "text/plain", []byte("hello"), 0)
	large := upload(t, api, "large", "application/octet-stream", bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16), 0)
	for _, u := range []status{small, large} {
		if u.State != "pending" && u.State != "stored" {
			t.Fatalf("upload %s: got state %q, want pending", u.ID, u.State)
		}
		awaitState(t, api, u.ID, "stored")
	}

	rw := startService(t, bin, refwriter, as(refwriter, "BLOB_URL="+blobURL, "METRICS_ADDR="+testenv.FreeAddr(t)))
	rw.awaitReady(t)
	// A retry waits for the reference; so does a new upload.
	if got := upload(t, api, "small", "text/plain", []byte("hello"), 30); got.State != "completed" || got.Reference == nil {
		t.Errorf("retry of %s: got %+v, want it completed", small.ID, got)
	}
	third := upload(t, api, "third", "text/plain", []byte("third"), 30)
	if third.State != "completed" {
		t.Errorf("upload %s: got state %q, want completed", third.ID, third.State)
	}
	awaitState(t, api, large.ID, "completed")

	// The large body travelled as a claim check: ingest staged it.
	adm := connect(t, n.url(), admin)
	staging, err := adm.js.ObjectStore(t.Context(), stagingBucket)
	if err != nil {
		t.Fatalf("staging bucket: %v", err)
	}
	if info, err := staging.GetInfo(t.Context(), large.ID); err != nil || info.Size != 200<<10 {
		t.Errorf("staged body of %s: got %+v, %v, want %d bytes", large.ID, info, err, 200<<10)
	}

	// What neither consumer can process goes to the dead-letter stream.
	for _, subject := range []string{events.RequestedSubject(testenv.ID("bad")), events.BlobStoredSubject(testenv.ID("bad"))} {
		testenv.PublishMsg(t, adm.js, &nats.Msg{Subject: subject, Data: []byte("not a CloudEvent")})
		if d, _ := testenv.AwaitDeadLetter(t, adm.js, subject, within); d.Reason != events.ReasonMalformed {
			t.Errorf("dead letter of %s: got reason %q, want %q", subject, d.Reason, events.ReasonMalformed)
		}
	}

	if got := countRefs(t, dbURL, small.ID, large.ID, third.ID); got != 3 {
		t.Errorf("upload_refs rows of the 3 uploads: got %d, want 3", got)
	}
	for _, p := range []*process{ing, bw, rw} {
		if err := p.stop(); err != nil {
			t.Errorf("%s: exit after SIGTERM: %v, want 0", p.name, err)
		}
	}
	n.checkNoViolations(t)
}

// status is the part of ingest's upload state the test reads.
type status struct {
	ID        string            `json:"id"`
	State     string            `json:"state"`
	Reference *events.Reference `json:"reference"`
}

// permToken is ingest's token in these tests, as strong as ingest wants.
const permToken = "permZq3vX9pL2mN8rT4wY6bC1dF5gH7jK0"

var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Minute}

// upload POSTs body to ingest with Idempotency-Key key, waiting up to wait
// seconds for the reference when wait is not 0.
func upload(t *testing.T, api, key, contentType string, body []byte, wait int) status {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, api+"/v1/uploads?subject=users/42/"+key, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+permToken)
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", contentType)
	if wait > 0 {
		req.Header.Set("Prefer", fmt.Sprintf("wait=%d", wait))
	}
	return do(t, req)
}

// awaitState polls the upload's status until it is state.
func awaitState(t *testing.T, api, id, state string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		req, err := http.NewRequest(http.MethodGet, api+"/v1/uploads/"+id, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+permToken)
		got := do(t, req)
		if got.State == state {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload %s: got state %q after %v, want %q", id, got.State, within, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func do(t *testing.T, req *http.Request) status {
	t.Helper()
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: got %s %s, want 2xx", req.Method, req.URL, resp.Status, b)
	}
	var s status
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("%s %s: %v in %s", req.Method, req.URL, err, b)
	}
	return s
}

// countRefs counts the reference rows of ids.
func countRefs(t *testing.T, dbURL string, ids ...string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM upload_refs WHERE id = ANY($1)", ids).Scan(&n); err != nil {
		t.Fatalf("count upload_refs: %v", err)
	}
	return n
}

// process is a running service binary.
type process struct {
	name    string
	metrics string // METRICS_ADDR
	cmd     *exec.Cmd
	out     *testenv.SyncBuffer
	done    chan struct{}
	err     error // of Wait, once done is closed
}

// startService starts bin/name with env; the test's cleanup stops it and,
// if the test failed, shows its output.
func startService(t *testing.T, bin, name string, env []string) *process {
	t.Helper()
	p := &process{name: name, out: &testenv.SyncBuffer{}, done: make(chan struct{})}
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "METRICS_ADDR="); ok {
			p.metrics = v
		}
	}
	p.cmd = exec.Command(filepath.Join(bin, name))
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.out.String())
		}
	})
	return p
}

// runSetup runs `blobrefctl setup` from bin with env and returns its output.
func runSetup(bin string, env []string) (string, error) {
	cmd := exec.Command(filepath.Join(bin, "blobrefctl"), "setup", "--timeout", "1m")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// awaitOutput waits until the service has written text.
func (p *process) awaitOutput(t *testing.T, text string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(p.out.String(), text) {
		select {
		case <-p.done:
			t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %q in its output after 2m:\n%s", p.name, text, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ready reports whether the service's /readyz answers 200 now.
func (p *process) ready() bool {
	resp, err := httpClient.Get("http://" + p.metrics + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// awaitReady waits for the service's /readyz to answer 200.
func (p *process) awaitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case <-p.done:
			t.Fatalf("%s exited before it was ready: %v\n%s", p.name, p.err, p.out.String())
		default:
		}
		if resp, err := httpClient.Get("http://" + p.metrics + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not ready after 2m\n%s", p.name, p.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop sends SIGTERM, waits for the exit (SIGKILL after 40s) and returns
// Wait's error.
func (p *process) stop() error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(40 * time.Second)
	defer timer.Stop()
	select {
	case <-p.done:
	case <-timer.C:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	return p.err
}
