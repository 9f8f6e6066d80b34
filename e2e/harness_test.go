// Package e2e tests the real service binaries end to end: blobwriter,
// refwriter, ingest and notifier run as processes against a JetStream server (a
// nats-server process of the test's own), a Postgres schema of the test's own and a file:// bucket, and
// every test checks the invariants of the design against the stores
// themselves.
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
)

// binDir holds the service binaries TestMain builds once.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "blobref-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := func() int {
		defer os.RemoveAll(dir)
		if err := testenv.Build(dir, "services/blobwriter", "services/refwriter", "services/ingest", "services/notifier"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

// pipeline is one test's world: JetStream, a Postgres schema, a bucket
// directory and the service processes.
type pipeline struct {
	t         *testing.T
	nats      *testenv.NATS
	nc        *nats.Conn
	js        jetstream.JetStream
	pg        *testenv.Postgres
	blobDir   string
	completed *testenv.Events // uploads.completed.>
}

func newPipeline(t *testing.T) *pipeline {
	t.Helper()
	return newPipelineOn(t, testenv.StartPostgres(t), t.TempDir())
}

// newPipelineOn is newPipeline with the given Postgres schema (a private
// server's, say) and blob directory.
func newPipelineOn(t *testing.T, pg *testenv.Postgres, blobDir string) *pipeline {
	t.Helper()
	p := &pipeline{t: t, blobDir: blobDir, pg: pg}
	p.nats = testenv.StartNATS(t)
	p.nc, p.js = p.nats.Connect()
	p.completed = testenv.Subscribe(t, p.nc, "uploads.completed.>")
	return p
}

// proc is a running service binary.
type proc struct {
	*testenv.Proc
	metricsAddr string
	httpAddr    string // ingest's API; "" for the consumers
}

// The bearer token of the ingest processes the tests start, and the caller
// it stands for.
const (
	ingestToken  = "e2eQ7vX9pL2mN8rT4wY6bC1dF5gH7jK0s" // as strong as ingest wants
	ingestCaller = "e2e"
)

// startIngest runs ingest like start does, with its API on httpAddr (a
// free port when "") and ingestToken as its one token.
func (p *pipeline) startIngest(httpAddr string, extra ...string) *proc {
	p.t.Helper()
	if httpAddr == "" {
		httpAddr = testenv.FreeAddr(p.t)
	}
	env := append([]string{"HTTP_ADDR=" + httpAddr, "AUTH_TOKENS=" + ingestToken + "=" + ingestCaller}, extra...)
	pr := p.start("ingest", env...)
	pr.httpAddr = httpAddr
	return pr
}

// start runs service name with the pipeline's environment plus extra
// KEY=VALUE settings and waits until its /readyz answers 200. The test's
// cleanup stops it.
func (p *pipeline) start(name string, extra ...string) *proc {
	p.t.Helper()
	pr := p.launch(name, extra...)
	pr.AwaitReady(p.t, pr.metricsAddr)
	return pr
}

// launch is start without the wait for /readyz: it waits until /healthz
// answers, for a service whose dependency is down from the start.
func (p *pipeline) launch(name string, extra ...string) *proc {
	p.t.Helper()
	addr := testenv.FreeAddr(p.t)
	env := append(testenv.ServiceEnv(p.nats.URL(), p.pg.URL, "file://"+p.blobDir), "METRICS_ADDR="+addr)
	pr := &proc{Proc: testenv.StartProc(p.t, name, filepath.Join(binDir, name), nil, append(env, extra...)), metricsAddr: addr}
	pr.AwaitHTTP(p.t, "http://"+addr+"/healthz", nil)
	return pr
}

// metric returns the sum of the samples of a counter family whose labels
// include match (e.g. `step="blob"`).
func (pr *proc) metric(t *testing.T, family string, match ...string) float64 {
	t.Helper()
	return testenv.ScrapeCounter(t, "http://"+pr.metricsAddr+"/metrics", family, match...)
}

// upload is one request the test sends, and what the stores must end up
// holding for it.
type upload struct {
	ID      string
	Subject string
	Data    []byte
	Time    time.Time
}

func newUpload(id string, size int) upload {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(len(id) + i*31)
	}
	copy(data, id)
	return upload{ID: id, Subject: "users/" + id + "/avatar", Data: data, Time: time.Now().UTC().Truncate(time.Microsecond)}
}

func (u upload) sha() string {
	s := sha256.Sum256(u.Data)
	return hex.EncodeToString(s[:])
}

func (u upload) event(t *testing.T) *events.Event {
	t.Helper()
	ev, err := events.NewRequested(events.Request{
		ID: u.ID, Source: "/e2e", Subject: u.Subject, ContentType: "application/octet-stream", Time: u.Time, Data: u.Data,
	})
	if err != nil {
		t.Fatalf("NewRequested: %v", err)
	}
	return ev
}

// publish sends u's request event. msgID "" publishes it as a new message
// (a republish that JetStream does not de-duplicate).
func (p *pipeline) publish(u upload, msgID string) {
	p.t.Helper()
	testenv.Publish(p.t, p.js, u.event(p.t), msgID)
}

// publishClaimChecked stages u's bytes in the uploads-staging object store,
// as ingest does for a large body, and publishes the request that refers
// to them (Nats-Msg-Id = u.ID). It returns the event, to publish again.
func (p *pipeline) publishClaimChecked(u upload) *events.Event {
	p.t.Helper()
	ctx := context.Background()
	store, err := p.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "uploads-staging", Storage: jetstream.FileStorage})
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := store.PutBytes(ctx, u.ID, u.Data); err != nil {
		p.t.Fatal(err)
	}
	ev, err := events.NewRequested(events.Request{
		ID: u.ID, Source: "/e2e", Subject: u.Subject, ContentType: "application/octet-stream", Time: u.Time,
		DataRef: "nats-object://uploads-staging/" + u.ID, SHA256: u.sha(),
	})
	if err != nil {
		p.t.Fatal(err)
	}
	testenv.Publish(p.t, p.js, ev, u.ID)
	return ev
}

// awaitCompleted waits for n completed events and returns their count per
// upload id.
func (p *pipeline) awaitCompleted(n int, within time.Duration) map[string]int {
	p.t.Helper()
	got := map[string]int{}
	for id, evs := range p.completed.Await(p.t, n, within) {
		got[id] = len(evs)
	}
	return got
}

// awaitEachCompletedOnce waits for a completed event of each of us (two
// minutes at most) and fails the test for any upload completed other than
// once.
func (p *pipeline) awaitEachCompletedOnce(us []upload) {
	p.t.Helper()
	got := p.awaitCompleted(len(us), 2*time.Minute)
	for _, u := range us {
		if got[u.ID] != 1 {
			p.t.Errorf("%s: %d completed events, want 1", u.ID, got[u.ID])
		}
	}
}

// awaitMarkers polls until step has n markers.
func (p *pipeline) awaitMarkers(step string, n int) {
	p.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := p.pg.Count(p.t, `SELECT count(*) FROM step_markers WHERE step = $1`, step)
		if got == n {
			return
		}
		if got > n || time.Now().After(deadline) {
			p.t.Fatalf("%s markers: got %d, want %d", step, got, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// objectStat is the evidence that an object was not rewritten: fileblob
// writes a new file and renames it over the key, so a rewrite changes the
// inode and the modification time.
type objectStat struct {
	Ino   uint64
	Mtime int64
}

func (p *pipeline) objectPath(id string) string {
	return filepath.Join(p.blobDir, "uploads", id)
}

func (p *pipeline) statObjects(ids []string) map[string]objectStat {
	p.t.Helper()
	out := map[string]objectStat{}
	for _, id := range ids {
		fi, err := os.Stat(p.objectPath(id))
		if err != nil {
			p.t.Fatalf("object of %s: %v", id, err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		out[id] = objectStat{Ino: st.Ino, Mtime: fi.ModTime().UnixNano()}
	}
	return out
}

// rowVersions returns each reference row's xmin: an UPDATE or a
// delete-and-insert changes it.
func (p *pipeline) rowVersions() map[string]string {
	p.t.Helper()
	return p.pg.Map(p.t, `SELECT id, xmin::text FROM upload_refs`)
}

// checkInvariants checks the stores hold exactly one object with the right
// bytes and one matching reference row per upload, and nothing else: once
// per key, no dangling reference, nothing lost.
func (p *pipeline) checkInvariants(uploads []upload) {
	p.t.Helper()
	want := map[string]upload{}
	for _, u := range uploads {
		want[u.ID] = u
	}
	entries, err := os.ReadDir(filepath.Join(p.blobDir, "uploads"))
	if err != nil && len(want) > 0 {
		p.t.Fatalf("bucket: %v", err)
	}
	objects := 0
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".attrs") {
			continue
		}
		objects++
		if _, ok := want[e.Name()]; !ok {
			p.t.Errorf("object uploads/%s: not an accepted upload", e.Name())
		}
	}
	if objects != len(want) {
		p.t.Errorf("objects: got %d, want %d", objects, len(want))
	}
	type row struct {
		subject, key, sha, ctype string
		size                     int64
		eventTime                time.Time
	}
	rows, err := p.pg.Pool.Query(context.Background(),
		`SELECT id, subject, blob_key, size, sha256, content_type, event_time FROM upload_refs`)
	if err != nil {
		p.t.Fatal(err)
	}
	got := map[string]row{}
	for rows.Next() {
		var id string
		var r row
		if err := rows.Scan(&id, &r.subject, &r.key, &r.size, &r.sha, &r.ctype, &r.eventTime); err != nil {
			p.t.Fatal(err)
		}
		got[id] = r
	}
	rows.Close()
	if len(got) != len(want) {
		p.t.Errorf("reference rows: got %d, want %d", len(got), len(want))
	}
	for id, u := range want {
		data, err := os.ReadFile(p.objectPath(id))
		if err != nil {
			p.t.Errorf("object of %s: %v", id, err)
			continue
		}
		if !bytes.Equal(data, u.Data) {
			p.t.Errorf("object of %s: got %d bytes (sha %x), want the %d uploaded", id, len(data), sha256.Sum256(data), len(u.Data))
		}
		r, ok := got[id]
		switch {
		case !ok:
			p.t.Errorf("reference of %s: missing", id)
		case r.key != "uploads/"+id || r.size != int64(len(u.Data)) || r.sha != u.sha() || r.subject != u.Subject:
			p.t.Errorf("reference of %s: got %+v, want key uploads/%s size %d sha %s subject %s", id, r, id, len(u.Data), u.sha(), u.Subject)
		case !r.eventTime.Equal(u.Time):
			p.t.Errorf("reference of %s: event time %v, want %v", id, r.eventTime, u.Time)
		}
	}
}

func ids(uploads []upload) []string {
	out := make([]string, len(uploads))
	for i, u := range uploads {
		out[i] = u.ID
	}
	return out
}
