package readmodel_test

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/services/ingest/internal/readmodel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const within = 20 * time.Second

// rows returns the read model, one line per upload.
func rows(t *testing.T, pg *testenv.Postgres) map[string]string {
	t.Helper()
	return pg.Map(t, `SELECT id, concat_ws('|', owner, subject, content_type, size, sha256, event_time, seen_at, stored_at,
		completed_at, ref, progress_seq, dead_seq, dead_orig_seq, dead_reason, dead_step, dead_at) FROM ingest_upload_view`)
}

// pipeline is one upload's events as the steps publish them.
type pipeline struct {
	req, stored, completed *events.Event
}

func newPipeline(t *testing.T, id, owner string) pipeline {
	t.Helper()
	req, err := events.NewRequested(events.Request{ID: id, Source: "/test/producer", Owner: owner, Subject: "users/1/" + id,
		ContentType: "text/plain", Data: []byte("bytes of " + id)})
	if err != nil {
		t.Fatal(err)
	}
	b := events.Blob{Key: events.DefaultKeyPrefix + id, Size: int64(len(req.Data)), SHA256: req.SHA256, ContentType: req.ContentType}
	stored, err := events.NewBlobStored(req, b, events.SourceBlobWriter)
	if err != nil {
		t.Fatal(err)
	}
	completed, err := events.NewCompleted(stored, events.Reference{ID: id, Owner: req.Owner, Subject: req.Subject, Blob: b, EventTime: req.Time},
		events.SourceRefWriter)
	if err != nil {
		t.Fatal(err)
	}
	return pipeline{req, stored, completed}
}

// deadLetter publishes a dead letter of ev's message as a step does and
// returns its message.
func deadLetter(t *testing.T, js jetstream.JetStream, ev *events.Event, step, reason string) {
	t.Helper()
	msg, err := ev.Msg("")
	if err != nil {
		t.Fatal(err)
	}
	// The sequence of the message in UPLOADS, when it is there.
	var seq uint64
	if stream, err := js.Stream(t.Context(), events.StreamName); err == nil {
		if raw, err := stream.GetLastMsgForSubject(t.Context(), msg.Subject); err == nil {
			seq = raw.Sequence
		}
	}
	d := events.DeadLetter{Reason: reason, Step: step, Error: "dial tcp 10.0.0.1:5432: connection refused", Subject: msg.Subject,
		Stream: events.StreamName, Deliveries: 5, Sequence: seq, Time: time.Now().UTC()}
	testenv.PublishMsg(t, js, events.DeadLetterMsg(d, msg.Header, msg.Data, ""))
}

// awaitDrained waits until each of the read model's consumers has every
// message of its stream applied and acked.
func awaitDrained(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	deadline := time.Now().Add(within)
	for _, spec := range events.IngestViewConsumers {
		awaitConsumer(t, js, spec, 0, deadline)
	}
}

// awaitConsumer waits until spec's consumer has delivered every message of
// its stream and acking of them await their acks, failing the test at
// deadline. Until the projector has created the consumer, it is not found.
func awaitConsumer(t *testing.T, js jetstream.JetStream, spec events.ConsumerSpec, acking int, deadline time.Time) {
	t.Helper()
	for {
		var info *jetstream.ConsumerInfo
		c, err := js.Consumer(t.Context(), spec.StreamOrDefault(), spec.Durable)
		if err == nil {
			info, err = c.Info(t.Context())
		}
		if err == nil && info.NumPending == 0 && info.NumAckPending == acking {
			return
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Fatalf("consumer %s: %v", spec.Durable, err)
			}
			t.Fatalf("consumer %s: %d pending, %d awaiting an ack; want 0 and %d", spec.Durable, info.NumPending, info.NumAckPending, acking)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// start starts a NATS server with the pipeline's streams and a fresh
// schema.
func start(t *testing.T) (*testenv.Postgres, jetstream.JetStream) {
	t.Helper()
	n := testenv.StartNATS(t)
	_, js := n.Connect()
	pg := testenv.StartPostgres(t)
	if err := events.EnsureStreams(t.Context(), js, events.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return pg, js
}

// runProjector runs a projector until the returned stop is called (or the
// test ends).
func runProjector(t *testing.T, pg *testenv.Postgres, js jetstream.JetStream) (stop func()) {
	t.Helper()
	return runProjectorWith(t, &readmodel.Projector{Pool: pg.Pool, JS: js, Logger: testenv.Logger(t), BatchSize: 3})
}

// runProjectorWith runs p until the returned stop is called (or the test
// ends).
func runProjectorWith(t *testing.T, p *readmodel.Projector) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// The consumers fold the pipeline's events in, and a replay of both streams
// from the start (new durables, as after a reset of the read model) leaves
// every row as it was.
func TestReplayLeavesTheReadModelUnchanged(t *testing.T) {
	t.Parallel()
	pg, js := start(t)
	stop := runProjector(t, pg, js)

	var want []string
	for i := range 10 {
		p := newPipeline(t, fmt.Sprintf("up-%d", i), "alice")
		want = append(want, p.req.ID)
		switch i % 3 {
		case 0: // completed, its completed event first
			testenv.Publish(t, js, p.completed, "")
			testenv.Publish(t, js, p.stored, "")
		case 1: // stored, then refused by refwriter
			testenv.Publish(t, js, p.stored, "")
			deadLetter(t, js, p.stored, events.StepRef, events.ReasonConflict)
		case 2: // refused by blobwriter, re-driven and stored
			testenv.Publish(t, js, p.req, p.req.ID)
			deadLetter(t, js, p.req, events.StepBlob, events.ReasonRetriesExhausted)
			testenv.Publish(t, js, p.stored, "")
			testenv.Publish(t, js, p.stored, "") // republished
		}
	}
	// Not an upload's: skipped, never stuck.
	testenv.PublishMsg(t, js, events.DeadLetterMsg(events.DeadLetter{Reason: events.ReasonMalformed, Step: events.StepBlob,
		Subject: "uploads.requested.bad*id"}, nil, []byte("?"), ""))
	awaitDrained(t, js)
	before := rows(t, pg)
	if got := len(before); got != len(want) {
		t.Fatalf("rows: got %d, want %d: %v", got, len(want), before)
	}
	states := pg.Map(t, `SELECT id, concat_ws(',', stored_at IS NOT NULL, completed_at IS NOT NULL, dead_reason) FROM ingest_upload_view`)
	for i, id := range want {
		wantState := map[int]string{0: "t,t", 1: "t,f," + events.ReasonConflict, 2: "t,f," + events.ReasonRetriesExhausted}[i%3]
		if states[id] != wantState {
			t.Errorf("%s: got %s, want %s", id, states[id], wantState)
		}
	}

	stop()
	for _, spec := range events.IngestViewConsumers {
		if err := js.DeleteConsumer(t.Context(), spec.StreamOrDefault(), spec.Durable); err != nil {
			t.Fatal(err)
		}
	}
	runProjector(t, pg, js)
	awaitDrained(t, js)
	if after := rows(t, pg); !maps.Equal(after, before) {
		t.Errorf("after a replay:\n got %v\nwant %v", after, before)
	}
}

// A fact merges into its row whatever came before it: every order of an
// upload's facts, each applied twice, gives the same row, whether applied
// one by one (the statement merges) or all in one call (the facts merge in
// Go first, then one statement writes them).
func TestFactsMergeInAnyOrder(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	p := newPipeline(t, "any-order", "alice")
	t0 := time.Now().UTC().Truncate(time.Microsecond)
	dead, ok := readmodel.DeadLetter(events.DeadLetterSubject(events.BlobStoredSubject(p.req.ID)), deadHeader(t, p.stored), nil, 7, t0.Add(3*time.Second))
	if !ok {
		t.Fatal("dead letter: not read as one")
	}
	dead.Size = 99 // a size without a digest, as no event gives: the size comes with the first digest
	later := *p.completed
	laterRef := *later.Ref
	laterRef.Subject = "users/1/elsewhere"
	later.Ref = &laterRef
	redead, _ := readmodel.DeadLetter(events.DeadLetterSubject(events.BlobStoredSubject(p.req.ID)), deadHeader(t, p.stored), nil, 9, t0.Add(5*time.Second))
	facts := []readmodel.Fact{
		readmodel.Stored(p.stored, t0.Add(time.Second), 2),
		readmodel.Stored(p.stored, t0.Add(4*time.Second), 5), // a republish
		readmodel.Completed(p.completed, t0.Add(6*time.Second), 6),
		readmodel.Completed(&later, t0.Add(8*time.Second), 7), // recorded by another run: never the reference
		dead, redead,
	}
	// Each order in a transaction of its own, rolled back.
	merged := func(order []int, together bool) string {
		tx, err := pg.Pool.Begin(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(context.Background()) }()
		var all []readmodel.Fact
		for _, j := range append(order, order...) {
			if together {
				all = append(all, facts[j])
			} else if err := readmodel.Apply(t.Context(), tx, facts[j]); err != nil {
				t.Fatal(err)
			}
		}
		if err := readmodel.Apply(t.Context(), tx, all...); err != nil {
			t.Fatal(err)
		}
		var row string
		err = tx.QueryRow(t.Context(), `SELECT concat_ws('|', owner, subject, content_type, size, sha256, event_time, stored_at,
			completed_at, ref, progress_seq, dead_seq, dead_orig_seq, dead_reason, dead_step, dead_at) FROM ingest_upload_view`).Scan(&row)
		if err != nil {
			t.Fatal(err)
		}
		return row
	}
	orders := permutations(len(facts))
	want := merged(orders[0], false)
	for i, order := range orders {
		if got := merged(order, true); got != want {
			t.Fatalf("order %v in one call:\n got %s\nwant %s (order %v)", order, got, want, orders[0])
		}
		if i == 0 {
			continue
		}
		if got := merged(order, false); got != want {
			t.Fatalf("order %v:\n got %s\nwant %s (order %v)", order, got, want, orders[0])
		}
	}
	for _, j := range orders[0] {
		if err := readmodel.Apply(t.Context(), pg.Pool, facts[j]); err != nil {
			t.Fatal(err)
		}
	}
	// The first stored and completed times, the latest progress, the dead
	// letter with the highest UPLOADS_DLQ sequence.
	row := pg.Map(t, `SELECT 'row', concat_ws('|', stored_at = $1, completed_at = $2, progress_seq, dead_seq, ref->>'subject')
		FROM ingest_upload_view`, t0.Add(time.Second), t0.Add(6*time.Second))
	if got, want := row["row"], "t|t|7|9|"+p.req.Subject; got != want {
		t.Errorf("merged row: got %s, want %s", got, want)
	}
}

func deadHeader(t *testing.T, ev *events.Event) map[string][]string {
	t.Helper()
	msg, err := ev.Msg("")
	if err != nil {
		t.Fatal(err)
	}
	d := events.DeadLetter{Reason: events.ReasonConflict, Step: events.StepRef, Subject: msg.Subject, Stream: events.StreamName,
		Deliveries: 1, Sequence: 1, Time: time.Now().UTC()}
	return events.DeadLetterMsg(d, msg.Header, msg.Data, "").Header
}

// permutations returns every order of 0..n-1.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int{}, p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

// The read model's statement takes an upload off ingest's list of
// incomplete uploads (ingest_incomplete, which the completer's rounds read)
// when, and only when, the row it merged says completed: not for a
// blob_stored event or a dead letter. It never writes ingest's record, so a
// record another transaction holds (a publish being recorded, a completer's
// claim) does not stop it; a row of the list another transaction holds is
// skipped, not waited for, and the completer takes it off later.
func TestCompletionTakesTheUploadOffTheList(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	ctx := t.Context()
	p := newPipeline(t, "marked", "alice")
	if _, err := pg.Pool.Exec(ctx, `INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type, size, sha256,
		published_at, published_seq, publish_count) VALUES ($1, 'alice', $1, $2, 'text/plain', 1, 'aa', now(), 1, 1)`,
		p.req.ID, p.req.Subject); err != nil {
		t.Fatal(err)
	}
	if _, err := pg.Pool.Exec(ctx, `INSERT INTO ingest_incomplete (id) VALUES ($1)`, p.req.ID); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC().Truncate(time.Microsecond)
	incomplete := func() bool {
		t.Helper()
		return pg.Count(t, `SELECT count(*) FROM ingest_incomplete WHERE id = $1`, p.req.ID) == 1
	}
	record := func() string {
		t.Helper()
		return pg.Map(t, `SELECT 'v', xmin::text FROM ingest_uploads WHERE id = $1`, p.req.ID)["v"]
	}
	apply := func(f readmodel.Fact) {
		t.Helper()
		if err := readmodel.Apply(ctx, pg.Pool, f); err != nil {
			t.Fatal(err)
		}
	}
	dead, ok := readmodel.DeadLetter(events.DeadLetterSubject(events.BlobStoredSubject(p.req.ID)), deadHeader(t, p.stored), nil, 7, t0)
	if !ok {
		t.Fatal("dead letter: not read as one")
	}
	before := record()
	apply(readmodel.Stored(p.stored, t0, 2))
	apply(dead)
	if !incomplete() {
		t.Fatal("stored and dead-lettered: taken off the list of incomplete uploads, want kept")
	}

	// completeHeld applies the completion while another transaction holds
	// the upload's row of table; a wait for the lock would outlast within.
	completeHeld := func(table string) {
		t.Helper()
		tx, err := pg.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		if _, err := tx.Exec(ctx, `SELECT FROM `+table+` WHERE id = $1 FOR UPDATE`, p.req.ID); err != nil {
			t.Fatal(err)
		}
		held, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		if err := readmodel.Apply(held, pg.Pool, readmodel.Completed(p.completed, t0.Add(5*time.Second), 5)); err != nil {
			t.Fatalf("completed while %s held the upload's row: %v", table, err)
		}
	}
	// Its row of the list held by another transaction (another completion
	// being recorded, a completer's round): skipped.
	completeHeld("ingest_incomplete")
	if !incomplete() {
		t.Fatal("completed while its row of the list was held: taken off, want skipped")
	}
	// A blob_stored event or a dead letter never looks at the list, not
	// even after a completion: the completer's rounds or a redelivered
	// completion take it off.
	apply(readmodel.Stored(p.stored, t0.Add(time.Second), 4))
	apply(dead)
	if !incomplete() {
		t.Fatal("stored and dead-lettered after a skipped completion: taken off, want kept")
	}
	// The same completion again (a redelivery), while the record is held
	// (a publish being recorded): taken off, without waiting for the record.
	completeHeld("ingest_uploads")
	if incomplete() {
		t.Fatal("completed again: still listed incomplete")
	}
	// An earlier completion and a dead letter afterwards change nothing.
	apply(readmodel.Completed(p.completed, t0.Add(3*time.Second), 3))
	apply(dead)
	if incomplete() {
		t.Error("after an earlier completion: listed incomplete again")
	}
	if after := record(); after != before {
		t.Errorf("ingest's record was written (version %s, then %s): the read model must leave it alone", before, after)
	}
}
