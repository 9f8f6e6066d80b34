package runner_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
)

// perMessage is what the runner sent for each message it handled: to
// Postgres (read off the wire) and to NATS (its connection's statistics).
type perMessage struct {
	PGRoundTrips, PGStatements, PGPrepares, PGPings, PGConnects float64
	NATSOut, NATSIn                                             float64
}

func (c perMessage) String() string {
	return fmt.Sprintf("postgres: %.2f round trips, %.2f statements (%.2f prepares, %.2f pings, %.2f connects); nats: %.2f messages out, %.2f in",
		c.PGRoundTrips, c.PGStatements, c.PGPrepares, c.PGPings, c.PGConnects, c.NATSOut, c.NATSIn)
}

// costRig runs a step whose side effect does nothing, so that what is
// counted is the runner's own work: a blob-like step (markers only) or,
// with inTx, a ref-like one that writes one row per item in the markers'
// transaction in one statement, as refwriter does.
type costRig struct {
	tb       testing.TB
	js       jetstream.JetStream // publishes
	runNC    *nats.Conn
	runJS    jetstream.JetStream
	wire     *testenv.PGWire
	pool     *pgxpool.Pool
	step     step.Step[events.Blob]
	outcomes chan step.Outcome
	seq      int
	tp       trace.TracerProvider // the runner's; nil: tracing off
}

func newCostRig(tb testing.TB, inTx bool) *costRig {
	tb.Helper()
	n := testenv.StartNATS(tb)
	_, js := n.Connect()
	runNC, runJS := n.Connect()
	pg := testenv.StartPostgres(tb)
	if _, err := pg.Pool.Exec(context.Background(), `CREATE TABLE effects (id text PRIMARY KEY)`); err != nil {
		tb.Fatal(err)
	}
	r := &costRig{tb: tb, js: js, runNC: runNC, runJS: runJS, wire: &testenv.PGWire{}, outcomes: make(chan step.Outcome, 1024)}
	r.pool = r.wire.Pool(tb, pg.URL, 24)
	r.step = step.Step[events.Blob]{
		Name:     "blob",
		Consumes: events.TypeRequested,
		Durable:  events.BlobWriterConsumer.Durable,
		Effect: func(_ context.Context, ev *events.Event) (events.Blob, error) {
			return events.Blob{Key: "uploads/" + ev.ID, Size: int64(len(ev.Data)), SHA256: ev.SHA256, ContentType: ev.ContentType}, nil
		},
		Emit: func(ev *events.Event, b events.Blob) (*events.Event, error) {
			return events.NewBlobStored(ev, b, "/test")
		},
	}
	if inTx {
		r.step.InTx = func(ctx context.Context, tx pgx.Tx, items []step.Item[events.Blob]) ([]error, error) {
			ids := make([]string, len(items))
			for i, it := range items {
				ids[i] = it.Event.ID
			}
			_, err := tx.Exec(ctx, `INSERT INTO effects SELECT unnest($1::text[]) ON CONFLICT DO NOTHING`, ids)
			return nil, err
		}
	}
	return r
}

// queueInTx makes the ref-like step queue its writes with the markers
// (Step.QueueInTx): the same row per item, inserted without ON CONFLICT.
func (r *costRig) queueInTx() {
	r.step.QueueInTx = func(b *pgx.Batch, items []step.Item[events.Blob]) {
		ids := make([]string, len(items))
		for i, it := range items {
			ids[i] = it.Event.ID
		}
		b.Queue(`INSERT INTO effects SELECT unnest($1::text[])`, ids)
	}
}

// start runs a runner with batches of up to batch messages until the
// returned function stops it. prefilled says the messages are published
// before it starts.
func (r *costRig) start(batch int, prefilled bool) (stop func()) {
	r.tb.Helper()
	opts := step.Options{
		BatchSize: batch, MaxInFlight: 4 * batch, Concurrency: 8, Logger: testenv.Logger(r.tb),
		OnOutcome:      func(o step.Outcome) { r.outcomes <- o },
		TracerProvider: r.tp,
	}
	if prefilled {
		// The batch of many is published before the runner starts: it
		// fills at once, and must not be cut short by a busy machine.
		// Its pull requests end soon after the runner, so that the next
		// batch does not go to one of them.
		opts.BatchWait, opts.FetchWait = 500*time.Millisecond, 100*time.Millisecond
	}
	run, err := step.NewRunner(r.runJS, r.pool, r.step, opts)
	if err != nil {
		r.tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := run.Run(ctx); err != nil {
			r.tb.Errorf("Run: %v", err)
		}
	}()
	return func() { cancel(); <-done }
}

func (r *costRig) publish() {
	r.tb.Helper()
	r.seq++
	id := fmt.Sprintf("c%06d", r.seq)
	ev, err := events.NewRequested(events.Request{ID: id, Source: "/test", Subject: "users/" + id, ContentType: "text/plain", Data: []byte(id)})
	if err != nil {
		r.tb.Fatal(err)
	}
	testenv.Publish(r.tb, r.js, ev, id)
}

func (r *costRig) await(n int) {
	r.tb.Helper()
	for range n {
		o := <-r.outcomes
		if o.Kind != step.Done {
			r.tb.Fatalf("outcome %+v, want done", o)
		}
	}
}

// alone handles n messages each published once the one before it was
// settled: every batch holds one message. Once the runner stopped, it waits
// for its last pull request to end, as together does: a message the next
// call publishes could go to it, and wait out AckWait (30s) before its
// redelivery.
func (r *costRig) alone(n int) {
	stop := r.start(64, false)
	defer r.awaitNoPulls()
	defer stop()
	for range n {
		r.publish()
		r.await(1)
	}
}

// together handles n messages in batches of batch: each batch is
// published before a runner starts to take it.
func (r *costRig) together(batch, n int) {
	for n > 0 {
		k := min(batch, n)
		for range k {
			r.publish()
		}
		stop := r.start(batch, true)
		r.await(k)
		stop()
		r.awaitNoPulls()
		n -= k
	}
}

// awaitNoPulls waits until the consumer has no pull request waiting: the
// stopped runner's last one ended.
func (r *costRig) awaitNoPulls() {
	r.tb.Helper()
	ctx := context.Background()
	cons, err := r.js.Consumer(ctx, events.StreamName, r.step.Durable) // not counted
	if err != nil {
		r.tb.Fatal(err)
	}
	for deadline := time.Now().Add(timeout); ; time.Sleep(10 * time.Millisecond) {
		info, err := cons.Info(ctx)
		if err != nil {
			r.tb.Fatal(err)
		}
		if info.NumWaiting == 0 {
			return
		}
		if time.Now().After(deadline) {
			r.tb.Fatalf("consumer has %d pull requests waiting %v after its runner stopped", info.NumWaiting, timeout)
		}
	}
}

// measure returns what handling n messages with handle cost per message.
func (r *costRig) measure(n int, handle func(n int)) perMessage {
	pg0, nats0 := r.wire.Counts(), r.runNC.Stats()
	handle(n)
	pg, st := r.wire.Counts().Sub(pg0), r.runNC.Stats()
	f := float64(n)
	return perMessage{
		PGRoundTrips: float64(pg.RoundTrips) / f, PGStatements: float64(pg.Statements) / f,
		PGPrepares: float64(pg.Prepares) / f, PGPings: float64(pg.Pings) / f, PGConnects: float64(pg.Connects) / f,
		NATSOut: float64(st.OutMsgs-nats0.OutMsgs) / f, NATSIn: float64(st.InMsgs-nats0.InMsgs) / f,
	}
}

// TestRoundTripsPerMessage counts what one message costs the runner in
// Postgres round trips and statements, alone in its batch and in a batch
// of 64. The counts are read off the wire, so they are exact: a change
// that adds a round trip to the hot path fails here. NATS messages are
// logged, not checked: besides one publish and one ack per message, they
// hold a pull request per FetchWait while idle, which depends on time.
func TestRoundTripsPerMessage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name                   string
		inTx, queued, readOnly bool
		batch                  int
		maxRT, maxStmts        float64 // per message
		maxNATSOut             float64
	}{
		{name: "markers/alone", batch: 1, maxRT: 2, maxStmts: 6, maxNATSOut: 3},
		{name: "markers+tx/alone", inTx: true, batch: 1, maxRT: 4, maxStmts: 7, maxNATSOut: 3},
		{name: "markers/64", batch: 64, maxRT: 2.0 / 64, maxStmts: 6.0 / 64, maxNATSOut: 2.2},
		{name: "markers+tx/64", inTx: true, batch: 64, maxRT: 4.0 / 64, maxStmts: 7.0 / 64, maxNATSOut: 2.2},
		// A ReadOnly step's first deliveries take no claim: one round trip
		// less per batch.
		{name: "read-only/markers/alone", readOnly: true, batch: 1, maxRT: 1, maxStmts: 3, maxNATSOut: 3},
		{name: "read-only/markers+tx/alone", readOnly: true, inTx: true, batch: 1, maxRT: 3, maxStmts: 4, maxNATSOut: 3},
		{name: "read-only/markers+tx/64", readOnly: true, inTx: true, batch: 64, maxRT: 3.0 / 64, maxStmts: 4.0 / 64, maxNATSOut: 2.2},
		// A step that queues its writes with the markers (QueueInTx)
		// records them in one round trip, as a step without them does.
		{name: "markers+queued/alone", inTx: true, queued: true, batch: 1, maxRT: 2, maxStmts: 7, maxNATSOut: 3},
		{name: "read-only/markers+queued/alone", readOnly: true, inTx: true, queued: true, batch: 1, maxRT: 1, maxStmts: 4, maxNATSOut: 3},
		{name: "read-only/markers+queued/64", readOnly: true, inTx: true, queued: true, batch: 64, maxRT: 1.0 / 64, maxStmts: 4.0 / 64, maxNATSOut: 2.2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newCostRig(t, tc.inTx)
			if tc.queued {
				r.queueInTx()
			}
			r.step.ReadOnly = tc.readOnly
			handle := r.alone
			if tc.batch > 1 {
				handle = func(n int) { r.together(tc.batch, n) }
			}
			handle(max(16, tc.batch)) // warm: connections open, statements prepared
			got := r.measure(max(16, 4*tc.batch), handle)
			t.Logf("%s: %v", tc.name, got)
			if got.PGRoundTrips > tc.maxRT || got.PGStatements > tc.maxStmts {
				t.Errorf("postgres per message: got %.3f round trips and %.3f statements, want at most %.3f and %.3f",
					got.PGRoundTrips, got.PGStatements, tc.maxRT, tc.maxStmts)
			}
		})
	}
}

// BenchmarkRunnerCost reports what one message costs the runner: Postgres
// round trips and statements, NATS messages sent and received, alone in
// its batch and in batches of 64. Time per message is printed too, but on
// a shared machine it is noise; the counts are what it is for.
func BenchmarkRunnerCost(b *testing.B) {
	for _, inTx := range []bool{false, true} {
		for _, batch := range []int{1, 64} {
			name := fmt.Sprintf("markers/batch=%d", batch)
			if inTx {
				name = fmt.Sprintf("markers+tx/batch=%d", batch)
			}
			b.Run(name, func(b *testing.B) {
				r := newCostRig(b, inTx)
				handle := r.alone
				if batch > 1 {
					handle = func(n int) { r.together(batch, n) }
				}
				handle(max(16, batch))
				b.ResetTimer()
				got := r.measure(b.N, handle)
				b.StopTimer()
				b.ReportMetric(got.PGRoundTrips, "pg-roundtrips/msg")
				b.ReportMetric(got.PGStatements, "pg-statements/msg")
				b.ReportMetric(got.NATSOut, "nats-out/msg")
				b.ReportMetric(got.NATSIn, "nats-in/msg")
			})
		}
	}
}

// discard is a span exporter that drops what it is sent.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// BenchmarkRunnerTracing is what tracing costs the runner per message, in
// batches of 64: off (no TracerProvider, the default) and on (the SDK with
// a batch span processor, as stepservice sets it up, exporting nowhere).
// allocs/msg counts every allocation of the test process while the
// messages are handled, the publishing client's included: the difference
// between off and on is tracing's.
func BenchmarkRunnerTracing(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			r := newCostRig(b, false)
			if on {
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discard{}))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				r.tp = tp
			}
			handle := func(n int) { r.together(64, n) }
			handle(64)
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			b.ResetTimer()
			handle(b.N)
			b.StopTimer()
			runtime.ReadMemStats(&m1)
			b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(b.N), "allocs/msg")
			b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/float64(b.N), "B/msg")
		})
	}
}
