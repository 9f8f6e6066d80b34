package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/blobref/blobref/internal/claimcheck"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
	"github.com/blobref/blobref/pkg/step/steptest"
	"github.com/blobref/blobref/services/ingest/internal/api"
	"github.com/blobref/blobref/services/ingest/internal/auth"
	"github.com/blobref/blobref/services/ingest/internal/readmodel"
	"github.com/blobref/blobref/services/ingest/internal/uploads"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// timeout bounds every wait of a test.
const timeout = 30 * time.Second

// The test's callers: alice and bob may upload and read, reader only read,
// uploader only upload.
const (
	aliceToken    = "alice-token"
	bobToken      = "bob-token"
	readerToken   = "reader-token"
	uploaderToken = "uploader-token"
	carolToken    = "carol-token"
	tokenList     = aliceToken + "=alice," + bobToken + "=bob:upload,read," +
		readerToken + "=reader:read," + uploaderToken + "=uploader:upload," +
		carolToken + "=carol::users/7/,teams/1/"
)

// env is one test's world: the real API handler over real JetStream and a
// Postgres schema of its own, served by an httptest server.
type env struct {
	t       testing.TB
	nats    *testenv.NATS
	nc      *nats.Conn          // the test's own connection
	js      jetstream.JetStream // the test's own JetStream
	pg      *testenv.Postgres
	srv     *httptest.Server
	clock   *clock
	reg     *prometheus.Registry
	svc     *uploads.Service
	staging *claimcheck.Staging
	// svcPool is the service's own pool, when options.poolConns sets one.
	svcPool *pgxpool.Pool
}

type options struct {
	maxUpload int64
	waitMax   time.Duration
	// wire, if set, records the service's Postgres round trips and NATS
	// operations.
	wire *wire
	// quiet: the API logs nothing (a benchmark's thousands of requests).
	quiet bool
	// body, limits and quota are the API's and the service's limits.
	body   api.BodyTimeouts
	limits api.CallerLimits
	quota  *uploads.StagedQuota
	// poolConns, if set, is the size of the service's own Postgres pool,
	// whose waits last at most poolWait.
	poolConns int32
	poolWait  time.Duration
	// noReadModel: no consumer feeds ingest's read model (it lags behind
	// the events for good).
	noReadModel bool
	// natsConf, if set, configures the test's nats-server; streams and
	// staging configure its streams and the staging bucket.
	natsConf string
	streams  events.StreamOptions
	staging  func(*claimcheck.Staging)
}

func setup(t testing.TB, opts ...func(*options)) *env {
	t.Helper()
	o := options{maxUpload: 64 << 20, waitMax: 10 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	n := testenv.StartNATS
	if o.natsConf != "" {
		n = func(t testing.TB) *testenv.NATS { return testenv.StartNATSConf(t, o.natsConf) }
	}
	e := &env{t: t, nats: n(t), pg: testenv.StartPostgres(t), clock: &clock{now: time.Now()}, reg: prometheus.NewRegistry()}
	e.nc, e.js = e.nats.ConnectWith(o.streams)
	svcNC, svcJS, pool := e.nc, e.js, e.pg.Pool
	if o.wire != nil {
		svcNC, svcJS, pool = e.wired(o.wire)
	} else {
		svcNC, svcJS = e.nats.ConnectWith(o.streams)
	}
	if o.poolConns > 0 {
		pool = e.pool(o.poolConns)
		e.svcPool = pool
	}
	if o.poolWait == 0 {
		o.poolWait = timeout
	}

	tokens, err := auth.Load(tokenList, "")
	if err != nil {
		t.Fatal(err)
	}
	allowed, err := api.ParseMediaTypes([]string{"image/*", "application/octet-stream", "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	apiMetrics, err := api.NewMetrics(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	uploadMetrics, err := uploads.NewMetrics(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	e.staging = &claimcheck.Staging{JS: svcJS, Bucket: "uploads-staging", TTL: time.Hour}
	if o.staging != nil {
		o.staging(e.staging)
	}
	e.svc = &uploads.Service{
		Pool: uploads.BoundedPool(pool, o.poolWait), NC: svcNC, JS: svcJS, Staging: e.staging, Quota: o.quota,
		InlineThreshold: 512 << 10, RedriveAfter: time.Minute, PublishTimeout: time.Second,
		Now: e.clock.Now, Metrics: uploadMetrics,
	}
	logger := testenv.Logger(t)
	if o.quiet {
		logger = slog.New(slog.DiscardHandler)
	}
	testenv.Run(t, e.svc)
	// ingest's read model, fed by the events the tests publish as the steps do.
	if !o.noReadModel {
		testenv.Run(t, &readmodel.Projector{Pool: e.pg.Pool, JS: e.js, Logger: logger})
	}
	select {
	case <-e.svc.Started():
	case <-time.After(timeout):
		t.Fatal("the service did not start")
	}
	h := api.New(api.Options{
		Uploads: e.svc, Tokens: tokens, MaxUploadSize: o.maxUpload, AllowedTypes: allowed,
		WaitMax: o.waitMax, Metrics: apiMetrics, Logger: logger, Body: o.body, Limits: o.limits,
	})
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	t.Cleanup(h.StopWaiting)
	return e
}

// wired returns a NATS connection, its JetStream and a Postgres pool of the
// test's schema whose traffic w records.
func (e *env) wired(w *wire) (*nats.Conn, jetstream.JetStream, *pgxpool.Pool) {
	e.t.Helper()
	// No keep-alive PING during a test: only the service's own operations.
	nc, err := nats.Connect(e.nats.URL(), nats.SetCustomDialer(w), nats.PingInterval(time.Hour))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(e.pg.URL)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = w
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(pool.Close)
	return nc, js, pool
}

// pool returns a Postgres pool of the test's schema with at most conns
// connections.
func (e *env) pool(conns int32) *pgxpool.Pool {
	e.t.Helper()
	cfg, err := pgxpool.ParseConfig(e.pg.URL)
	if err != nil {
		e.t.Fatal(err)
	}
	cfg.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(pool.Close)
	return pool
}

// clock is the service's clock, moved by the test.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// upload is a POST /v1/uploads; zero fields take the defaults.
type upload struct {
	token       string    // [aliceToken]; "-" sends none
	subject     string    // [users/42/avatar]
	query       string    // the raw query instead of subject=
	key         string    // [key-1]; "-" sends none
	contentType string    // [image/png]; "-" sends none
	body        []byte    // sent with a Content-Length
	stream      io.Reader // sent chunked instead of body
	header      http.Header
}

type reply struct {
	status int
	header http.Header
	body   []byte
	close  bool // the server closes the connection after it
}

func (e *env) post(u upload) reply {
	e.t.Helper()
	if u.token == "" {
		u.token = aliceToken
	}
	if u.subject == "" {
		u.subject = "users/42/avatar"
	}
	if u.query == "" {
		u.query = "subject=" + url.QueryEscape(u.subject)
	}
	if u.key == "" {
		u.key = "key-1"
	}
	if u.contentType == "" {
		u.contentType = "image/png"
	}
	var body io.Reader = bytes.NewReader(u.body)
	if u.stream != nil {
		body = io.NopCloser(u.stream) // unknown length: chunked
	}
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/uploads?"+u.query, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range u.header {
		req.Header[k] = v
	}
	if u.token != "-" {
		req.Header.Set("Authorization", "Bearer "+u.token)
	}
	if u.key != "-" {
		req.Header.Set("Idempotency-Key", u.key)
	}
	if u.contentType != "-" {
		req.Header.Set("Content-Type", u.contentType)
	}
	return e.do(req)
}

func (e *env) get(token, path string) reply {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "-" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return e.do(req)
}

func (e *env) do(req *http.Request) reply {
	e.t.Helper()
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: reading the answer: %v", req.Method, req.URL.Path, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: body, close: resp.Close}
}

// state checks that the reply has status and a JSON state, and returns it.
func (r reply) state(t *testing.T, status int) uploads.State {
	t.Helper()
	if r.status != status {
		t.Fatalf("status: got %d (%s), want %d", r.status, r.body, status)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type: got %q, want application/json", ct)
	}
	var st uploads.State
	if err := json.Unmarshal(r.body, &st); err != nil {
		t.Fatalf("state %s: %v", r.body, err)
	}
	return st
}

// problem checks that the reply is a problem of status and type slug
// whose detail (or invalid-params) mentions each of mention, and returns it.
func (r reply) problem(t *testing.T, status int, slug string, mention ...string) api.Problem {
	t.Helper()
	if r.status != status {
		t.Fatalf("status: got %d (%s), want %d", r.status, r.body, status)
	}
	if ct := r.header.Get("Content-Type"); ct != api.ProblemContentType {
		t.Fatalf("Content-Type: got %q, want %s", ct, api.ProblemContentType)
	}
	var p api.Problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem %s: %v", r.body, err)
	}
	if p.Status != status || p.Type != api.ProblemTypeBase+slug || p.Title == "" || p.Detail == "" {
		t.Fatalf("problem: got %s, want status %d, type %s, a title and a detail", r.body, status, api.ProblemTypeBase+slug)
	}
	text := p.Detail
	for _, ip := range p.InvalidParams {
		text += " " + ip.Name + ": " + ip.Reason
	}
	for _, m := range mention {
		if !strings.Contains(text, m) {
			t.Errorf("problem %s: got detail %q, want it to mention %q", slug, text, m)
		}
	}
	return p
}

// requests returns the request events of upload id in the stream, oldest
// first, with their Nats-Msg-Id.
func (e *env) requests(id string) (evs []*events.Event, msgIDs []string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stream, err := e.js.Stream(ctx, events.StreamName)
	if err != nil {
		e.t.Fatal(err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.RequestedSubject(id)},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	n := int(info.NumPending)
	if n == 0 {
		return nil, nil
	}
	batch, err := cons.FetchNoWait(n)
	if err != nil {
		e.t.Fatal(err)
	}
	for msg := range batch.Messages() {
		ev, err := events.Decode(msg.Subject(), msg.Headers(), msg.Data())
		if err != nil {
			e.t.Fatalf("request event of %s does not decode: %v", id, err)
		}
		evs = append(evs, ev)
		msgIDs = append(msgIDs, msg.Headers().Get(events.HeaderMsgID))
	}
	if err := batch.Error(); err != nil {
		e.t.Fatal(err)
	}
	if len(evs) != n {
		e.t.Fatalf("request events of %s: fetched %d of %d", id, len(evs), n)
	}
	return evs, msgIDs
}

// awaitRequests polls the stream until it holds n request events of id.
func (e *env) awaitRequests(id string, n int) []*events.Event {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs, _ := e.requests(id)
		if len(evs) >= n || time.Now().After(deadline) {
			if len(evs) != n {
				e.t.Fatalf("request events of %s: got %d, want %d", id, len(evs), n)
			}
			return evs
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// awaitRows polls a counting query until it counts n.
func (e *env) awaitRows(query string, n int, args ...any) {
	e.t.Helper()
	e.pg.AwaitCount(e.t, timeout, n, query, args...)
}

// storeBlob records the blob step's marker and publishes its blob_stored
// event the way blobwriter does, and waits until ingest's read model has
// it.
func (e *env) storeBlob(req *events.Event) (events.Blob, *events.Event) {
	e.t.Helper()
	b := events.Blob{Key: events.DefaultKeyPrefix + req.ID, Size: e.size(req), SHA256: req.SHA256, ContentType: req.ContentType}
	blob := step.Step[events.Blob]{Name: events.StepBlob, Effect: func(context.Context, *events.Event) (events.Blob, error) { return b, nil }}
	if _, err := steptest.Work(context.Background(), e.pg.Pool, blob, req); err != nil {
		e.t.Fatalf("blob marker of %s: %v", req.ID, err)
	}
	stored, err := events.NewBlobStored(req, b, events.SourceBlobWriter)
	if err != nil {
		e.t.Fatal(err)
	}
	testenv.Publish(e.t, e.js, stored, "")
	e.awaitRows(`SELECT count(*) FROM ingest_upload_view WHERE id = $1 AND stored_at IS NOT NULL`, 1, req.ID)
	return b, stored
}

func (e *env) size(req *events.Event) int64 {
	if req.DataRef == "" {
		return int64(len(req.Data))
	}
	var n int64
	e.t.Helper()
	if err := e.pg.Pool.QueryRow(context.Background(), `SELECT size FROM ingest_uploads WHERE id = $1`, req.ID).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// complete finishes upload req the way blobwriter and refwriter do: the
// markers, the reference row in the ref marker's transaction (refstore.Insert's
// SQL), and their events; it waits until ingest's read model has them.
func (e *env) complete(req *events.Event) events.Reference {
	e.t.Helper()
	b, stored := e.storeBlob(req)
	ref := events.Reference{ID: req.ID, Owner: req.Owner, Subject: req.Subject, Blob: b, EventTime: req.Time}
	refStep := step.Step[events.Reference]{Name: events.StepRef,
		Effect: func(context.Context, *events.Event) (events.Reference, error) { return ref, nil },
		InTx: func(ctx context.Context, tx pgx.Tx, _ []step.Item[events.Reference]) ([]error, error) {
			_, err := tx.Exec(ctx, `
				INSERT INTO upload_refs (id, owner, subject, blob_key, size, sha256, content_type, event_time)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
				ON CONFLICT (id) DO NOTHING`,
				ref.ID, ref.Owner, ref.Subject, ref.Blob.Key, ref.Blob.Size, ref.Blob.SHA256, ref.Blob.ContentType, ref.EventTime)
			if err != nil {
				return nil, err
			}
			_, err = tx.Exec(ctx, `
				INSERT INTO subject_refs AS cur (owner, subject, upload_id, event_time) VALUES ($1, $2, $3, $4)
				ON CONFLICT (owner, subject) DO UPDATE
				SET upload_id = EXCLUDED.upload_id, event_time = EXCLUDED.event_time, updated_at = now()
				WHERE (cur.event_time, cur.upload_id) < (EXCLUDED.event_time, EXCLUDED.upload_id)`,
				ref.Owner, ref.Subject, ref.ID, ref.EventTime)
			return nil, err
		}}
	if w, err := steptest.Work(context.Background(), e.pg.Pool, refStep, stored); err != nil || w.Kind != step.Done {
		e.t.Fatalf("ref marker of %s: got %v, %v; want it recorded", req.ID, w.Kind, err)
	}
	completed, err := events.NewCompleted(stored, ref, events.SourceRefWriter)
	if err != nil {
		e.t.Fatal(err)
	}
	testenv.Publish(e.t, e.js, completed, "")
	e.awaitRows(`SELECT count(*) FROM ingest_upload_view WHERE id = $1 AND completed_at IS NOT NULL`, 1, req.ID)
	return ref
}

// pipelineEvents are the blob_stored and completed events blobwriter and
// refwriter publish for inline upload req, and the reference, unpublished.
func (e *env) pipelineEvents(req *events.Event) (stored, completed *events.Event, ref events.Reference) {
	e.t.Helper()
	b := events.Blob{Key: events.DefaultKeyPrefix + req.ID, Size: int64(len(req.Data)), SHA256: req.SHA256, ContentType: req.ContentType}
	stored, err := events.NewBlobStored(req, b, events.SourceBlobWriter)
	if err != nil {
		e.t.Fatal(err)
	}
	ref = events.Reference{ID: req.ID, Owner: req.Owner, Subject: req.Subject, Blob: b, EventTime: req.Time}
	if completed, err = events.NewCompleted(stored, ref, events.SourceRefWriter); err != nil {
		e.t.Fatal(err)
	}
	return stored, completed, ref
}

// publishCompleted publishes a completed event of upload req, as refwriter
// would, without recording anything.
func (e *env) publishCompleted(req *events.Event) {
	e.t.Helper()
	_, completed, _ := e.pipelineEvents(req)
	testenv.Publish(e.t, e.js, completed, "")
}

// deadLetter writes a dead letter of upload req's request event the way the
// step runner does, and waits until ingest's read model has it. Its time
// has Postgres's precision (microseconds), as the read model keeps it.
func (e *env) deadLetter(req *events.Event, reason, step string) events.DeadLetter {
	e.t.Helper()
	msg, err := req.Msg("")
	if err != nil {
		e.t.Fatal(err)
	}
	// The step dead-letters the latest message of the subject, at its
	// sequence in UPLOADS.
	stream, err := e.js.Stream(context.Background(), events.StreamName)
	if err != nil {
		e.t.Fatal(err)
	}
	orig, err := stream.GetLastMsgForSubject(context.Background(), msg.Subject)
	if err != nil {
		e.t.Fatalf("the message to dead-letter, %s: %v", msg.Subject, err)
	}
	d := events.DeadLetter{
		// A dependency's error, as a step may record it.
		Reason: reason, Step: step, Error: `blob: writing uploads/x: dial tcp 10.1.2.3:9000: connect: connection refused; postgres://blobref:password@db`,
		Subject: msg.Subject, Stream: events.StreamName, Deliveries: 1, Sequence: orig.Sequence,
		Time: time.Now().UTC().Truncate(time.Microsecond),
	}
	ack, err := e.js.PublishMsg(context.Background(), events.DeadLetterMsg(d, msg.Header, msg.Data, ""))
	if err != nil {
		e.t.Fatal(err)
	}
	e.awaitRows(`SELECT count(*) FROM ingest_upload_view WHERE id = $1 AND dead_seq >= $2`, 1, req.ID, int64(ack.Sequence))
	return d
}

// record reads ingest's row of id.
func (e *env) record(id string) (publishCount int, published bool, dataref string) {
	e.t.Helper()
	var (
		at  *time.Time
		ref *string
	)
	err := e.pg.Pool.QueryRow(context.Background(),
		`SELECT publish_count, published_at, dataref FROM ingest_uploads WHERE id = $1`, id).Scan(&publishCount, &at, &ref)
	if err != nil {
		e.t.Fatalf("record of %s: %v", id, err)
	}
	if ref != nil {
		dataref = *ref
	}
	return publishCount, at != nil, dataref
}

// stagingMsgs is the number of messages in the staging bucket's stream.
func (e *env) stagingMsgs() uint64 {
	e.t.Helper()
	ctx := context.Background()
	s, err := e.js.Stream(ctx, "OBJ_uploads-staging")
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return info.State.Msgs
}

func (e *env) counter(family string, match ...string) float64 {
	e.t.Helper()
	return testenv.Counter(e.t, e.reg, family, match...)
}

// histogram returns the sum and count of a histogram family.
func (e *env) histogram(family string) (sum, count float64) {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetHistogram().GetSampleSum()
			count += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum, count
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// randomBytes returns n bytes that differ per seed.
func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}
