package uploads

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/ingest/internal/readmodel"
)

// The completer's tests run rounds by hand against real JetStream and
// Postgres. The rows a crash leaves behind are made by the service's own
// batch statements (recordUploads, and the publish path); only the lapse of
// a claim is written by hand, as time would.

const completerHorizon = 10 * time.Minute

// completerEnv is one test's world: a service, its completer and the test's
// own JetStream.
type completerEnv struct {
	t     *testing.T
	pg    *testenv.Postgres
	js    jetstream.JetStream
	svc   *Service
	c     *Completer
	reg   *prometheus.Registry
	clock *testClock
}

func newCompleterEnv(t *testing.T) *completerEnv {
	t.Helper()
	n := testenv.StartNATS(t)
	_, js := n.Connect()
	e := &completerEnv{t: t, pg: testenv.StartPostgres(t), js: js, clock: &testClock{now: time.Now()}}
	e.svc, e.c, e.reg = e.replica()
	return e
}

// replica returns another ingest replica over the same stores: its own
// service, completer and metrics.
func (e *completerEnv) replica() (*Service, *Completer, *prometheus.Registry) {
	e.t.Helper()
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		e.t.Fatal(err)
	}
	cm, err := NewCompleterMetrics(reg)
	if err != nil {
		e.t.Fatal(err)
	}
	svc := &Service{
		Pool: e.pg.Pool, JS: e.js, InlineThreshold: 512 << 10, RedriveAfter: time.Minute,
		PublishTimeout: 5 * time.Second, Now: e.clock.Now, Metrics: m,
	}
	c := &Completer{Service: svc, Horizon: completerHorizon, Metrics: cm, Logger: testenv.Logger(e.t)}
	return svc, c, reg
}

type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// newRec returns the record of an inline upload of body with key.
func (e *completerEnv) newRec(key string, body []byte) record {
	sum := sha256.Sum256(body)
	return record{
		ID: ID("alice", key), Caller: "alice", Key: key, Subject: "users/42/" + key, ContentType: "text/plain",
		Size: int64(len(body)), SHA256: hex.EncodeToString(sum[:]), CreatedAt: e.svc.now(),
	}
}

// crashAfterRecord records the uploads as a batch does and publishes none,
// as ingest killed at ingest/after-record leaves them: claimed, with the
// outbox of the inline ones. inline[i] is nil for a staged upload.
func (e *completerEnv) crashAfterRecord(recs []record, inline [][]byte) {
	e.t.Helper()
	var jobs []*job
	for i, r := range recs {
		jobs = append(jobs, &job{ctx: context.Background(), rec: r, inline: inline[i], insert: true})
	}
	e.svc.insert(context.Background(), jobs)
	for _, j := range jobs {
		if j.err != nil || !j.won {
			e.t.Fatalf("record %s: won %v, %v", j.rec.ID, j.won, j.err)
		}
	}
}

// lapse ends the claims of ids, as time would.
func (e *completerEnv) lapse(ids ...string) {
	e.t.Helper()
	if _, err := e.pg.Pool.Exec(context.Background(),
		`UPDATE ingest_uploads SET claimed_until = now() - interval '1 second' WHERE id = ANY($1)`, ids); err != nil {
		e.t.Fatal(err)
	}
}

// submit uploads body with key through the service: recorded and published.
func (e *completerEnv) submit(key string, body []byte) string {
	e.t.Helper()
	res, err := e.svc.Submit(context.Background(), Submission{
		Caller: "alice", Key: key, Subject: "users/42/" + key, ContentType: "text/plain",
		Body: bytes.NewReader(body), Size: int64(len(body)),
	})
	if err != nil || !res.Created {
		e.t.Fatalf("submit %s: %+v, %v", key, res, err)
	}
	return res.State.ID
}

// round runs a round of c and checks that it found and resumed what it
// should, by kind.
func (e *completerEnv) round(c *Completer, found, resumed map[string]int) {
	e.t.Helper()
	res, err := c.round(context.Background())
	if err != nil {
		e.t.Fatalf("round: %v", err)
	}
	for _, kind := range []string{KindUnpublished, KindStalled} {
		if res.found[kind] != found[kind] || res.resumed[kind] != resumed[kind] {
			e.t.Errorf("round: %s found %d and resumed %d, want %d and %d",
				kind, res.found[kind], res.resumed[kind], found[kind], resumed[kind])
		}
	}
}

// requests returns the request events of id in UPLOADS with their
// Nats-Msg-Id, oldest first.
func (e *completerEnv) requests(id string) (evs []*events.Event, msgIDs []string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := e.js.OrderedConsumer(ctx, events.StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.RequestedSubject(id)},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	if info.NumPending == 0 {
		return nil, nil
	}
	batch, err := cons.FetchNoWait(int(info.NumPending))
	if err != nil {
		e.t.Fatal(err)
	}
	for msg := range batch.Messages() {
		ev, err := events.Decode(msg.Subject(), msg.Headers(), msg.Data())
		if err != nil {
			e.t.Fatalf("request event of %s: %v", id, err)
		}
		evs, msgIDs = append(evs, ev), append(msgIDs, msg.Headers().Get(events.HeaderMsgID))
	}
	if err := batch.Error(); err != nil {
		e.t.Fatal(err)
	}
	return evs, msgIDs
}

// row is what the completer changes in a record.
type row struct {
	publishCount int
	published    bool
	outbox       bool
	claimed      bool // claimed_until is in the future
}

func (e *completerEnv) row(id string) row {
	e.t.Helper()
	var r row
	err := e.pg.Pool.QueryRow(context.Background(), `
		SELECT publish_count, published_at IS NOT NULL, payload IS NOT NULL, coalesce(claimed_until > now(), false)
		FROM ingest_uploads WHERE id = $1`, id).Scan(&r.publishCount, &r.published, &r.outbox, &r.claimed)
	if err != nil {
		e.t.Fatalf("record of %s: %v", id, err)
	}
	return r
}

// pipelineEvents are the blob_stored and completed events the steps emit
// for upload id.
func (e *completerEnv) pipelineEvents(id string) (stored, done *events.Event) {
	e.t.Helper()
	ctx := context.Background()
	var owner, subject, sha, ct string
	var size int64
	var at time.Time
	if err := e.pg.Pool.QueryRow(ctx, `SELECT caller, subject, sha256, content_type, size, created_at FROM ingest_uploads WHERE id = $1`, id).
		Scan(&owner, &subject, &sha, &ct, &size, &at); err != nil {
		e.t.Fatal(err)
	}
	b := events.Blob{Key: events.DefaultKeyPrefix + id, Size: size, SHA256: sha, ContentType: ct}
	req, err := events.NewRequested(events.Request{ID: id, Source: events.SourceIngest, Owner: owner, Subject: subject,
		ContentType: ct, Time: at, DataRef: "nats-object://uploads-staging/" + id, SHA256: sha})
	if err != nil {
		e.t.Fatal(err)
	}
	if stored, err = events.NewBlobStored(req, b, events.SourceBlobWriter); err != nil {
		e.t.Fatal(err)
	}
	done, err = events.NewCompleted(stored, events.Reference{ID: id, Owner: owner, Subject: subject, Blob: b, EventTime: at},
		events.SourceRefWriter)
	if err != nil {
		e.t.Fatal(err)
	}
	return stored, done
}

// complete records in the read model that upload id was stored and
// completed, as its consumers do.
func (e *completerEnv) complete(id string) {
	e.t.Helper()
	stored, done := e.pipelineEvents(id)
	now := time.Now()
	for _, f := range []readmodel.Fact{readmodel.Stored(stored, now, 0), readmodel.Completed(done, now, 0)} {
		if err := readmodel.Apply(context.Background(), e.pg.Pool, f); err != nil {
			e.t.Fatal(err)
		}
	}
}

// deadLetter dead-letters the latest request event of id as the step
// runner does, and records it in the read model as its consumer does.
func (e *completerEnv) deadLetter(id string) {
	e.t.Helper()
	evs, _ := e.requests(id)
	msg, err := evs[len(evs)-1].Msg("")
	if err != nil {
		e.t.Fatal(err)
	}
	stream, err := e.js.Stream(context.Background(), events.StreamName)
	if err != nil {
		e.t.Fatal(err)
	}
	orig, err := stream.GetLastMsgForSubject(context.Background(), msg.Subject)
	if err != nil {
		e.t.Fatal(err)
	}
	d := events.DeadLetter{
		Reason: events.ReasonInvalid, Step: events.StepBlob, Error: "refused", Subject: msg.Subject,
		Stream: events.StreamName, Deliveries: 1, Sequence: orig.Sequence, Time: time.Now().UTC(),
	}
	dl := events.DeadLetterMsg(d, msg.Header, msg.Data, "")
	ack, err := e.js.PublishMsg(context.Background(), dl)
	if err != nil {
		e.t.Fatal(err)
	}
	f, ok := readmodel.DeadLetter(dl.Subject, dl.Header, dl.Data, ack.Sequence, time.Now())
	if !ok {
		e.t.Fatalf("dead letter of %s: not read as one", id)
	}
	if err := readmodel.Apply(context.Background(), e.pg.Pool, f); err != nil {
		e.t.Fatal(err)
	}
}

func (e *completerEnv) counter(reg *prometheus.Registry, family string, match ...string) float64 {
	e.t.Helper()
	return testenv.Counter(e.t, reg, family, match...)
}

// An upload recorded and never published (its ingest died at
// ingest/after-record) is published once its claim has lapsed: an inline
// one from its outbox, a staged one with its dataref. One whose claim is
// live is left to the request that holds it.
func TestCompleterPublishesWhatJetStreamNeverAcknowledged(t *testing.T) {
	t.Parallel()
	e := newCompleterEnv(t)
	inline := []byte("kept in the outbox")
	a := e.newRec("inline", inline)
	b := e.newRec("staged", []byte("staged bytes"))
	b.DataRef = "nats-object://uploads-staging/" + b.ID
	busy := e.newRec("busy", []byte("still being published"))
	e.crashAfterRecord([]record{a, b, busy}, [][]byte{inline, nil, []byte("still being published")})

	e.round(e.c, nil, nil) // every claim is live
	e.lapse(a.ID, b.ID)
	e.round(e.c, map[string]int{KindUnpublished: 2}, map[string]int{KindUnpublished: 2})

	evs, msgIDs := e.requests(a.ID)
	if len(evs) != 1 || msgIDs[0] != a.ID || !bytes.Equal(evs[0].Data, inline) || evs[0].SHA256 != a.SHA256 ||
		evs[0].Subject != a.Subject || !evs[0].Time.Equal(a.CreatedAt) || evs[0].Source != events.SourceIngest {
		t.Errorf("request of the inline upload: got %d events (%v), want one with Nats-Msg-Id %s and the outbox bytes", len(evs), msgIDs, a.ID)
	}
	evs, msgIDs = e.requests(b.ID)
	if len(evs) != 1 || msgIDs[0] != b.ID || evs[0].DataRef != b.DataRef || evs[0].Data != nil {
		t.Errorf("request of the staged upload: got %d events (%v), want one with the dataref %s", len(evs), msgIDs, b.DataRef)
	}
	for _, id := range []string{a.ID, b.ID} {
		if got, want := e.row(id), (row{publishCount: 1, published: true}); got != want {
			t.Errorf("record of %s: got %+v, want %+v (published, outbox emptied, claim ended)", id, got, want)
		}
	}
	if got, want := e.row(busy.ID), (row{outbox: true, claimed: true}); got != want {
		t.Errorf("record of the claimed upload: got %+v, want %+v (untouched)", got, want)
	}
	if evs, _ := e.requests(busy.ID); len(evs) != 0 {
		t.Errorf("request events of the claimed upload: got %d, want 0", len(evs))
	}
	if got := e.counter(e.reg, "blobref_ingest_publishes_total", `kind="first"`); got != 2 {
		t.Errorf("publishes_total{first}: got %v, want 2", got)
	}
	if got := e.counter(e.reg, "blobref_ingest_completer_resumed_total", `kind="unpublished"`); got != 2 {
		t.Errorf("completer_resumed_total{unpublished}: got %v, want 2", got)
	}

	e.round(e.c, nil, nil) // nothing left to do
	if evs, _ := e.requests(a.ID); len(evs) != 1 {
		t.Errorf("request events after another round: got %d, want 1", len(evs))
	}
}

// A published upload pending past the horizon is published again as a new
// message with the same event, once per horizon; the inline bytes come from
// its request event in UPLOADS. Completed and dead-lettered uploads are
// left alone, and so is one whose bytes are gone from UPLOADS, until the
// horizon has passed again.
func TestCompleterRepublishesStalledUploads(t *testing.T) {
	t.Parallel()
	e := newCompleterEnv(t)
	body := []byte("stalled bytes")
	stalled := e.submit("stalled", body)
	done := e.submit("done", []byte("completed bytes"))
	dead := e.submit("dead", []byte("dead-lettered bytes"))
	gone := e.submit("gone", []byte("bytes that aged out"))
	e.complete(done)
	e.deadLetter(dead)
	stream, err := e.js.Stream(context.Background(), events.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := stream.GetLastMsgForSubject(context.Background(), events.RequestedSubject(gone))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.DeleteMsg(context.Background(), raw.Sequence); err != nil {
		t.Fatal(err)
	}

	e.clock.Advance(completerHorizon - time.Second)
	e.round(e.c, nil, nil) // not yet past the horizon

	e.clock.Advance(2 * time.Second)
	e.round(e.c, map[string]int{KindStalled: 2}, map[string]int{KindStalled: 1})
	evs, msgIDs := e.requests(stalled)
	if len(evs) != 2 || msgIDs[1] != stalled+"-1" || !bytes.Equal(evs[1].Data, body) ||
		!evs[1].Time.Equal(evs[0].Time) || evs[1].SHA256 != evs[0].SHA256 {
		t.Fatalf("request events of the stalled upload: got %d (%v), want the first one again as %s-1", len(evs), msgIDs, stalled)
	}
	if got, want := e.row(stalled), (row{publishCount: 2, published: true}); got != want {
		t.Errorf("record of the stalled upload: got %+v, want %+v", got, want)
	}
	for id, want := range map[string]int{done: 1, dead: 1, gone: 0} {
		if evs, _ := e.requests(id); len(evs) != want {
			t.Errorf("request events of %s: got %d, want %d", id, len(evs), want)
		}
	}
	// Looked at once per horizon: the dead letter is final and the bytes
	// are gone, so the claims of those two are deferred.
	for _, id := range []string{dead, gone} {
		if r := e.row(id); !r.claimed || r.publishCount != 1 {
			t.Errorf("record of %s: got %+v, want published once and deferred", id, r)
		}
	}

	e.clock.Advance(completerHorizon - time.Second)
	e.round(e.c, nil, nil)
	e.clock.Advance(2 * time.Second)
	e.round(e.c, map[string]int{KindStalled: 1}, map[string]int{KindStalled: 1})
	if _, msgIDs := e.requests(stalled); len(msgIDs) != 3 || msgIDs[2] != stalled+"-2" {
		t.Errorf("request events after a second horizon: got %v, want a third, %s-2", msgIDs, stalled)
	}
	if got := e.counter(e.reg, "blobref_ingest_publishes_total", `kind="redrive"`); got != 2 {
		t.Errorf("publishes_total{redrive}: got %v, want 2", got)
	}
	if got := e.counter(e.reg, "blobref_ingest_completer_found_total", `kind="stalled"`); got != 3 {
		t.Errorf("completer_found_total{stalled}: got %v, want 3", got)
	}
}

// Two replicas running rounds at once over more uploads than a page claim
// each upload once: every upload is published once, and the publishes
// JetStream acknowledged, counted by both replicas, are one per upload
// (JetStream's de-duplication would hide a second publish in the stream;
// the acknowledgements do not).
func TestCompleterReplicasResumeEachUploadOnce(t *testing.T) {
	t.Parallel()
	e := newCompleterEnv(t)
	const n = 3*completerPage + 7
	var (
		recs   []record
		bodies [][]byte
		ids    []string
	)
	for i := range n {
		body := fmt.Appendf(nil, "body %d", i)
		recs, bodies = append(recs, e.newRec(fmt.Sprintf("k%d", i), body)), append(bodies, body)
		ids = append(ids, recs[i].ID)
	}
	e.crashAfterRecord(recs, bodies)
	e.lapse(ids...)

	_, other, otherReg := e.replica()
	var wg sync.WaitGroup
	results := make([]roundResult, 2)
	for i, c := range []*Completer{e.c, other} {
		wg.Go(func() {
			res, err := c.round(context.Background())
			if err != nil {
				t.Errorf("round: %v", err)
			}
			results[i] = res
		})
	}
	wg.Wait()

	found := results[0].found[KindUnpublished] + results[1].found[KindUnpublished]
	resumed := results[0].resumed[KindUnpublished] + results[1].resumed[KindUnpublished]
	if found != n || resumed != n {
		t.Errorf("two rounds at once: found %d and resumed %d (%d and %d), want %d each",
			found, resumed, results[0].resumed[KindUnpublished], results[1].resumed[KindUnpublished], n)
	}
	acks := e.counter(e.reg, "blobref_ingest_publishes_total") + e.counter(otherReg, "blobref_ingest_publishes_total")
	if acks != n {
		t.Errorf("publishes acknowledged by JetStream: got %v, want %d", acks, n)
	}
	if got := e.pg.Count(t, `SELECT count(*) FROM ingest_uploads WHERE publish_count = 1 AND payload IS NULL AND claimed_until IS NULL`); got != n {
		t.Errorf("records published once: got %d, want %d", got, n)
	}
	t.Logf("resumed by the two replicas: %d and %d", results[0].resumed[KindUnpublished], results[1].resumed[KindUnpublished])
}

// Run runs a round at once, records its backlog, and returns when its
// context ends.
func TestCompleterRun(t *testing.T) {
	t.Parallel()
	e := newCompleterEnv(t)
	r := e.newRec("run", []byte("run"))
	e.crashAfterRecord([]record{r}, [][]byte{[]byte("run")})
	e.lapse(r.ID)
	e.c.Interval = time.Hour
	testenv.Run(t, e.c)
	deadline := time.Now().Add(30 * time.Second)
	for e.counter(e.reg, "blobref_ingest_completer_rounds_total") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("no round within 30s of Run")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := e.row(r.ID); !got.published {
		t.Errorf("record after the first round: got %+v, want published", got)
	}
	families, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var backlog []string
	for _, f := range families {
		if f.GetName() == "blobref_ingest_completer_backlog" {
			for _, m := range f.GetMetric() {
				backlog = append(backlog, fmt.Sprintf("%s=%v", m.GetLabel()[0].GetValue(), m.GetGauge().GetValue()))
			}
		}
	}
	if got := strings.Join(backlog, " "); got != "stalled=0 unpublished=1" {
		t.Errorf("backlog: got %q, want stalled=0 unpublished=1", got)
	}
}

// An upload whose completed event is in UPLOADS, though the read model has
// not recorded it yet (ingest just restarted), is not resumed, and the read
// model learns of its completion.
func TestCompleterLeavesWhatTheEventsCompleted(t *testing.T) {
	t.Parallel()
	e := newCompleterEnv(t)
	id := e.submit("behind", []byte("completed, the read model behind"))
	_, done := e.pipelineEvents(id)
	testenv.Publish(t, e.js, done, "")
	e.clock.Advance(completerHorizon + time.Second)
	e.round(e.c, map[string]int{}, map[string]int{})
	if evs, _ := e.requests(id); len(evs) != 1 {
		t.Errorf("request events: got %d, want 1 (not resumed)", len(evs))
	}
	if n := e.pg.Count(t, `SELECT count(*) FROM ingest_upload_view WHERE id = $1 AND completed_at IS NOT NULL`, id); n != 1 {
		t.Errorf("read model: got %d completed rows of %s, want 1", n, id)
	}
}
