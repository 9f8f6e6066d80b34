// Package floors measures what each stage of blobref's pipeline costs on
// its own, with the pipeline's payloads and none of its machinery: the
// floors its throughput and CPU are judged against (issue 6).
//
//   - JetStream: the pipeline's shape of messaging, publish → pull consume
//     → publish → pull consume → publish with acks, and no side effects;
//     and, if asked, the same again on the stream the first pass left, as
//     a republish meets it;
//   - Bucket: the same objects written straight into the bucket with
//     gocloud.dev/blob, at the services' concurrency;
//   - Postgres: the same marker and reference rows inserted in batches;
//   - MarkerLookups: those markers read back in batches, as a step that
//     finds its marker reads it (what a republished request costs
//     Postgres);
//   - with JetStreamOptions.Work, JetStream's shape again with each stage
//     doing its side effects (the object and its marker, the reference
//     rows and theirs) before it relays, paced: floor (p), the latency of
//     the pipeline's durable work at a given rate on this machine's disk.
//
// Each reports its rate and the CPU time, user and system apart, of every
// process it involves (nats-server, the Postgres backends of its
// connections, this one).
package floors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"gocloud.dev/blob"
	"golang.org/x/sync/errgroup"

	"github.com/blobref/blobref/bench/internal/load"
	"github.com/blobref/blobref/bench/internal/pipeline"
	"github.com/blobref/blobref/bench/internal/procstat"
	"github.com/blobref/blobref/internal/dbschema"
	"github.com/blobref/blobref/pkg/events"
)

// Names of the processes a floor's CPU is read from: those a pipeline's
// meter uses.
const (
	NATSServer     = pipeline.NATSServer
	PostgresServer = pipeline.Postgres
	Bench          = pipeline.Bench
)

// Result is one measurement of a floor.
type Result struct {
	N       int
	Elapsed time.Duration
	// CPU is the CPU time of each process the stage involves, by name.
	CPU map[string]procstat.Times
	// Other is the machine's busy time that none of them accounts for:
	// other work on the machine while the floor ran.
	Other time.Duration
	// Latency is publish → completed (p50, p99, max) of a floor that
	// publishes each upload and waits for its completed event (JetStream's
	// passes); zero for the others.
	Latency [3]time.Duration
}

// Rate is uploads per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.N) / r.Elapsed.Seconds()
}

// PerUpload is the CPU time of process name per upload.
func (r Result) PerUpload(name string) procstat.Times { return r.CPU[name].Per(r.N) }

// TotalPerUpload is the CPU time of every process of the stage per upload.
func (r Result) TotalPerUpload() procstat.Times {
	var sum procstat.Times
	for name := range r.CPU {
		sum = sum.Add(r.PerUpload(name))
	}
	return sum
}

// measure runs f between two reads of meter.
func measure(meter *procstat.Meter, n int, f func() error) (Result, error) {
	before, err := meter.Read()
	if err != nil {
		return Result{}, err
	}
	if err := f(); err != nil {
		return Result{}, err
	}
	after, err := meter.Read()
	if err != nil {
		return Result{}, err
	}
	u := after.Sub(before)
	return Result{N: n, Elapsed: u.Wall, CPU: u.CPU, Other: u.Other}, nil
}

// JetStreamOptions say where floor (a) runs.
type JetStreamOptions struct {
	// URL and PID are those of a nats-server of its own (no consumers of
	// UPLOADS); the floor creates the streams as the services do.
	URL string
	PID int
	// Window is the producer's window of unacknowledged publishes, and each
	// stage's.
	Window int
	// Batch is how many messages a stage pulls at once.
	Batch int
	// Again: once the uploads are through, publish them all again and
	// measure that pass too (JetStreamResults.Again).
	Again bool
	// Rate paces the producer, in requests per second; 0 publishes as fast
	// as JetStream accepts them.
	Rate float64
	// Work, if set, gives each stage the pipeline's side effects, done
	// before it relays a batch (floor (p)).
	Work *StageWork
}

// StageWork is what the stages of floor (p) write besides their events:
// blobwriter's stage writes each object of a batch to the bucket (as
// floor (b), Concurrency at once) and then the batch's "blob" markers in
// one statement; refwriter's stage writes the batch's reference rows and
// "ref" markers in one round trip and one transaction (floor (c)'s
// statements). Neither
// looks anything up, claims, decodes or checks: the durable writes of the
// pipeline and none of its machinery.
type StageWork struct {
	BucketURL string
	// DatabaseURL's search_path names a fresh schema; the floor migrates it.
	DatabaseURL string
	// Backends lists the Postgres backends of DatabaseURL's connections,
	// whose CPU the floor reads.
	Backends    func() ([]int, error)
	Concurrency int
}

// JetStreamResults are floor (a)'s passes.
type JetStreamResults struct {
	// First is the uploads through a fresh stream: floor (a).
	First Result
	// Again is the same uploads published again once First is over, with
	// fresh Nats-Msg-Ids, into the stream that holds First's messages and
	// through the same consumers, as a republish sends them (a zero Result
	// without JetStreamOptions.Again): floor (a) as a republish meets
	// JetStream, with a stream three times the uploads long and their
	// message ids in its de-duplication window.
	Again Result
}

// JetStream measures floor (a): the uploads of set published to
// uploads.requested.<id>, pulled by a durable consumer that publishes the
// upload's blob_stored event and acks, pulled again by a second one that
// publishes its completed event and acks, and the completed events received
// on a core subscription. The events are those the pipeline sends (built by
// pkg/events beforehand); nothing decodes them. Every party has its own
// connection, as the pipeline's processes do. Elapsed runs from the first
// publish to the last completed event.
//
// With o.Work it measures floor (p) instead: each stage takes what has
// arrived (up to o.Batch messages) as a batch, as blobref's steps do under
// a paced load, does its StageWork, then relays the batch; Postgres's CPU
// counts too.
func JetStream(ctx context.Context, o JetStreamOptions, set *load.Set) (_ JetStreamResults, err error) {
	o.Window, o.Batch = max(o.Window, 1), max(o.Batch, 1)
	passes := []string{""}
	if o.Again {
		passes = append(passes, "-again")
	}
	stored, completed, err := set.Chain()
	if err != nil {
		return JetStreamResults{}, err
	}
	// Each pass's messages: its requests and each stage's next event, with
	// Nats-Msg-Ids of the pass's own.
	type pass struct{ requests, stored, completed []*nats.Msg }
	next := func(evs []*events.Event, step, suffix string) ([]*nats.Msg, error) {
		out := make([]*nats.Msg, len(evs))
		for i, ev := range evs {
			if out[i], err = ev.Msg("floor-" + step + "/" + ev.ID + suffix); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	msgs := make([]pass, len(passes))
	for i, suffix := range passes {
		if msgs[i].requests, err = set.Msgs(suffix); err != nil {
			return JetStreamResults{}, err
		}
		if msgs[i].stored, err = next(stored, events.StepBlob, suffix); err != nil {
			return JetStreamResults{}, err
		}
		if msgs[i].completed, err = next(completed, events.StepRef, suffix); err != nil {
			return JetStreamResults{}, err
		}
	}

	var work [2]func(context.Context, []int) error
	if o.Work != nil {
		bucket, pool, err := o.Work.open(ctx)
		if err != nil {
			return JetStreamResults{}, err
		}
		defer pool.Close()
		defer func() { _ = bucket.Close() }()
		work = o.Work.stages(bucket, pool, set, completed)
		defer func() {
			if err == nil {
				err = o.Work.check(ctx, bucket, pool, set)
			}
		}()
	}

	var conns []*nats.Conn
	defer func() {
		for _, nc := range conns {
			nc.Close()
		}
	}()
	connect := func(name string) (*nats.Conn, error) {
		nc, err := nats.Connect(o.URL, nats.Name("floor-"+name))
		if err != nil {
			return nil, fmt.Errorf("floors: %w", err)
		}
		conns = append(conns, nc)
		return nc, nil
	}
	pnc, err := connect("producer")
	if err != nil {
		return JetStreamResults{}, err
	}
	producer, err := load.NewProducer(pnc, o.Window)
	if err != nil {
		return JetStreamResults{}, err
	}
	if err := events.EnsureStreams(ctx, producer.JetStream(), events.StreamOptions{}); err != nil {
		return JetStreamResults{}, fmt.Errorf("floors: %w", err)
	}
	tnc, err := connect("tracker")
	if err != nil {
		return JetStreamResults{}, err
	}

	// The stages' next events: those of the pass under way, set before
	// the stages start. A pass starts once the last one's completed events
	// are all in, so no stage relays a message of the last pass after the
	// swap.
	var storedNext, completedNext atomic.Pointer[[]*nats.Msg]
	storedNext.Store(&msgs[0].stored)
	completedNext.Store(&msgs[0].completed)
	stages := []struct {
		spec events.ConsumerSpec
		next *atomic.Pointer[[]*nats.Msg]
		work func(context.Context, []int) error
	}{{events.BlobWriterConsumer, &storedNext, work[0]}, {events.RefWriterConsumer, &completedNext, work[1]}}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	g, gctx := errgroup.WithContext(sctx)
	for _, st := range stages {
		nc, err := connect(st.spec.Durable)
		if err != nil {
			return JetStreamResults{}, err
		}
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(o.Window))
		if err != nil {
			return JetStreamResults{}, fmt.Errorf("floors: %w", err)
		}
		cons, err := js.CreateOrUpdateConsumer(ctx, events.StreamName, jetstream.ConsumerConfig{
			Durable: "floor-" + st.spec.Durable, FilterSubject: st.spec.FilterSubject,
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxAckPending: max(1000, 2*o.Batch),
		})
		if err != nil {
			return JetStreamResults{}, fmt.Errorf("floors: consumer: %w", err)
		}
		r := &relayer{js: js, set: set, next: st.next}
		if st.work == nil {
			g.Go(func() error { return r.fetched(gctx, cons, o.Batch) })
		} else {
			g.Go(func() error { return r.arrived(gctx, cons, o.Batch, st.work) })
		}
	}

	ids := set.IDs()
	meter := natsMeter(o.PID)
	if o.Work != nil {
		meter.AddGroup(PostgresServer, o.Work.Backends)
	}
	results := make([]Result, len(passes))
	for i, m := range msgs {
		if i > 0 {
			storedNext.Store(&m.stored)
			completedNext.Store(&m.completed)
		}
		// A tracker of the pass's own: the last one saw these uploads
		// complete.
		var tracker *load.Tracker
		if tracker, err = load.Track(tnc); err != nil {
			break
		}
		published := make([]int64, len(m.requests))
		var done map[string]load.Completion
		results[i], err = measure(meter, len(m.requests), func() error {
			if err := producer.Publish(gctx, m.requests, published, o.Rate); err != nil {
				return err
			}
			var err error
			done, err = tracker.Wait(gctx, ids, nil, time.Minute)
			return err
		})
		tracker.Close()
		if err != nil {
			break
		}
		// The latencies, once the floor's CPU is read: the summary's sort
		// is not the floor's work.
		completed := make([]int64, len(ids))
		for j, id := range ids {
			completed[j] = done[id].At.UnixNano()
		}
		var latency load.Result
		if latency, err = load.Summarize(published, completed); err != nil {
			break
		}
		results[i].Latency = latency.Latency
	}
	stop()
	if gerr := g.Wait(); err == nil && gerr != nil && !errors.Is(gerr, context.Canceled) {
		err = gerr
	}
	if err != nil {
		return JetStreamResults{}, fmt.Errorf("floors: jetstream: %w", err)
	}
	out := JetStreamResults{First: results[0]}
	if o.Again {
		out.Again = results[1]
	}
	return out, nil
}

func natsMeter(pid int) *procstat.Meter {
	m := &procstat.Meter{}
	m.AddPID(NATSServer, pid)
	m.AddPID(Bench, os.Getpid())
	return m
}

// relayer is one stage of floor (a) or (p): it publishes the next event
// of each message it is given (the pass's, from next) asynchronously, and
// acks each message once its publish is acknowledged.
type relayer struct {
	js      jetstream.JetStream
	set     *load.Set
	next    *atomic.Pointer[[]*nats.Msg]
	pending []inflight
}

type inflight struct {
	msg jetstream.Msg
	paf jetstream.PubAckFuture
}

// index is the upload of set that msg is about.
func (r *relayer) index(msg jetstream.Msg) (int, error) {
	subject := msg.Subject()
	i := r.set.Index(subject[strings.LastIndexByte(subject, '.')+1:])
	if i < 0 {
		return 0, fmt.Errorf("a message on %s, not of this floor", subject)
	}
	return i, nil
}

// publish publishes the next event of upload i, whose message is msg.
func (r *relayer) publish(msg jetstream.Msg, i int) error {
	paf, err := r.js.PublishMsgAsync((*r.next.Load())[i], jetstream.WithStallWait(time.Minute))
	if err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	r.pending = append(r.pending, inflight{msg, paf})
	return nil
}

// settle waits for the publishes in hand and acks their messages.
func (r *relayer) settle() error {
	for _, p := range r.pending {
		select {
		case <-p.paf.Ok():
		case err := <-p.paf.Err():
			return fmt.Errorf("publish %s: %w", p.paf.Msg().Subject, err)
		}
		if err := p.msg.Ack(); err != nil {
			return fmt.Errorf("ack: %w", err)
		}
	}
	r.pending = r.pending[:0]
	return nil
}

// fetched is floor (a)'s stage: pull up to batch messages, relay each as it
// arrives, settle once the pull is over, until ctx ends.
func (r *relayer) fetched(ctx context.Context, cons jetstream.Consumer, batch int) error {
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		msgs, err := cons.Fetch(batch, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("fetch: %w", err)
		}
		for msg := range msgs.Messages() {
			i, err := r.index(msg)
			if err == nil {
				err = r.publish(msg, i)
			}
			if err != nil {
				cancel()
				return err
			}
		}
		cancel()
		if err := r.settle(); err != nil {
			return err
		}
	}
	return nil
}

// arrived is floor (p)'s stage: wait for a message, take it with whatever
// else has arrived behind it (up to batch), do work on the batch (the
// uploads' indexes in set), relay it and settle, until ctx ends. Nothing
// waits for a batch to fill: under a paced load a batch is what arrived
// while the last one was being written.
func (r *relayer) arrived(ctx context.Context, cons jetstream.Consumer, batch int, work func(context.Context, []int) error) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * batch))
	if err != nil {
		return fmt.Errorf("messages: %w", err)
	}
	in := make(chan jetstream.Msg, batch)
	failed := make(chan error, 1)
	go func() {
		defer close(in)
		for {
			msg, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					failed <- fmt.Errorf("next: %w", err)
				}
				return
			}
			in <- msg
		}
	}()
	defer func() {
		it.Stop()
		for range in { // let the reader see the iterator closed
		}
	}()
	var (
		msgs []jetstream.Msg
		idx  []int
	)
	for {
		msgs, idx = msgs[:0], idx[:0]
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			return err
		case msg, ok := <-in:
			if !ok {
				return nil
			}
			msgs = append(msgs, msg)
		}
	drain:
		for len(msgs) < batch {
			select {
			case msg, ok := <-in:
				if !ok {
					break drain
				}
				msgs = append(msgs, msg)
			default:
				break drain
			}
		}
		for _, msg := range msgs {
			i, err := r.index(msg)
			if err != nil {
				return err
			}
			idx = append(idx, i)
		}
		if err := work(ctx, idx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for j, msg := range msgs {
			if err := r.publish(msg, idx[j]); err != nil {
				return err
			}
		}
		if err := r.settle(); err != nil {
			return err
		}
	}
}

// open opens the bucket of floor (p)'s stages and a pool on its schema,
// migrated.
func (w *StageWork) open(ctx context.Context) (*blob.Bucket, *pgxpool.Pool, error) {
	bucket, err := blob.OpenBucket(ctx, w.BucketURL)
	if err != nil {
		return nil, nil, fmt.Errorf("floors: bucket: %w", err)
	}
	pool, err := pgxpool.New(ctx, w.DatabaseURL)
	if err == nil {
		if err = dbschema.Migrate(ctx, pool); err != nil {
			pool.Close()
		}
	}
	if err != nil {
		_ = bucket.Close()
		return nil, nil, fmt.Errorf("floors: %w", err)
	}
	return bucket, pool, nil
}

// check makes sure floor (p) did its work: every upload's two markers and
// reference row, and a sample of its objects whole.
func (w *StageWork) check(ctx context.Context, bucket *blob.Bucket, pool *pgxpool.Pool, set *load.Set) error {
	var markers, refs int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM step_markers), (SELECT count(*) FROM upload_refs)`).Scan(&markers, &refs); err != nil {
		return fmt.Errorf("floors: check: %w", err)
	}
	if n := len(set.Uploads); markers != 2*n || refs != n {
		return fmt.Errorf("floors: check: %d markers and %d references for %d uploads, want %d and %d", markers, refs, n, 2*n, n)
	}
	for i := 0; i < len(set.Uploads); i += max(1, len(set.Uploads)/50) {
		u := set.Uploads[i]
		a, err := bucket.Attributes(ctx, events.DefaultKeyPrefix+u.ID)
		if err != nil {
			return fmt.Errorf("floors: check: %w", err)
		}
		if a.Size != int64(len(u.Data)) || a.Metadata[events.MetadataSHA256] != u.Request.SHA256 {
			return fmt.Errorf("floors: check: %s: %d bytes, sha256 %q; want %d, %q", u.ID, a.Size, a.Metadata[events.MetadataSHA256], len(u.Data), u.Request.SHA256)
		}
	}
	return nil
}

// stages are the work of blobwriter's stage and refwriter's on a batch of
// set's uploads, given by their indexes; completed is set.Chain's.
func (w *StageWork) stages(bucket *blob.Bucket, pool *pgxpool.Pool, set *load.Set, completed []*events.Event) [2]func(context.Context, []int) error {
	of := func(idx []int) []*events.Event {
		evs := make([]*events.Event, len(idx))
		for j, i := range idx {
			evs[j] = completed[i]
		}
		return evs
	}
	store := func(ctx context.Context, idx []int) error {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(max(w.Concurrency, 1))
		for _, i := range idx {
			g.Go(func() error { return write(gctx, bucket, set.Uploads[i]) })
		}
		if err := g.Wait(); err != nil {
			return fmt.Errorf("floors: bucket: %w", err)
		}
		sql, args, err := markerRows(of(idx), events.StepBlob)
		if err != nil {
			return err
		}
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			return fmt.Errorf("floors: markers: %w", err)
		}
		return nil
	}
	ref := func(ctx context.Context, idx []int) error {
		evs := of(idx)
		sql, args, err := markerRows(evs, events.StepRef)
		if err != nil {
			return err
		}
		// One round trip, one implicit transaction: both statements go
		// with a single Sync.
		var b pgx.Batch
		b.Queue(sql, args...)
		b.Queue(refRowsSQL, refRows(evs)...)
		if err := pool.SendBatch(ctx, &b).Close(); err != nil {
			return fmt.Errorf("floors: references: %w", err)
		}
		return nil
	}
	return [2]func(context.Context, []int) error{store, ref}
}

// Bucket measures floor (b): the objects of set written to the bucket at
// bucketURL as blobwriter writes them (key uploads/<id>, the content type,
// the sha256 in the metadata, IfNotExist), by concurrency writers at once.
func Bucket(ctx context.Context, bucketURL string, concurrency int, set *load.Set) (Result, error) {
	bucket, err := blob.OpenBucket(ctx, bucketURL)
	if err != nil {
		return Result{}, fmt.Errorf("floors: bucket: %w", err)
	}
	defer bucket.Close()
	m := &procstat.Meter{}
	m.AddPID(Bench, os.Getpid())
	var next atomic.Int64
	res, err := measure(m, len(set.Uploads), func() error {
		g, gctx := errgroup.WithContext(ctx)
		for range max(concurrency, 1) {
			g.Go(func() error {
				for {
					i := int(next.Add(1) - 1)
					if i >= len(set.Uploads) {
						return nil
					}
					if err := write(gctx, bucket, set.Uploads[i]); err != nil {
						return err
					}
				}
			})
		}
		return g.Wait()
	})
	if err != nil {
		return Result{}, fmt.Errorf("floors: bucket: %w", err)
	}
	return res, nil
}

func write(ctx context.Context, bucket *blob.Bucket, u load.Upload) error {
	key := events.DefaultKeyPrefix + u.ID
	w, err := bucket.NewWriter(ctx, key, &blob.WriterOptions{
		ContentType: u.Request.ContentType,
		Metadata:    map[string]string{events.MetadataSHA256: u.Request.SHA256},
		IfNotExist:  true,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if _, err := w.Write(u.Data); err != nil {
		_ = w.Close()
		return fmt.Errorf("%s: %w", key, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

// Postgres measures floor (c): the rows the pipeline writes for each
// upload of set (the "blob" and "ref" markers, the upload_refs row, the
// subject_refs row), inserted batch uploads at a time, one transaction of
// three multi-row INSERTs per batch, by concurrency connections at once.
// databaseURL's search_path must name a fresh schema; Postgres migrates it
// first. Postgres's CPU is that of the processes backends lists: the
// backends of databaseURL's connections.
func Postgres(ctx context.Context, databaseURL string, backends func() ([]int, error), concurrency, batch int, set *load.Set) (Result, error) {
	return inBatches(ctx, "postgres", databaseURL, backends, concurrency, batch, set, insert)
}

// MarkerLookups measures floor (d): what a step that finds its marker
// reads, for each upload of set: its "blob" and "ref" markers with their
// recorded results, one SELECT per step for batch uploads at a time (each
// step's consumer looks its own markers up), by concurrency connections at
// once. It reads the rows floor (c) wrote, so it runs after Postgres, on
// the same schema; CPU is read as there.
func MarkerLookups(ctx context.Context, databaseURL string, backends func() ([]int, error), concurrency, batch int, set *load.Set) (Result, error) {
	return inBatches(ctx, "marker look-ups", databaseURL, backends, concurrency, batch, set, lookUp)
}

// inBatches runs do on set's completed uploads, batch at a time, from
// concurrency connections to databaseURL at once, and measures it: the CPU
// of the processes backends lists and this one's. It migrates the schema
// first, and opens every connection before measuring. what names the floor
// in errors.
func inBatches(ctx context.Context, what, databaseURL string, backends func() ([]int, error), concurrency, batch int, set *load.Set,
	do func(context.Context, *pgxpool.Pool, []*events.Event) error,
) (Result, error) {
	concurrency, batch = max(concurrency, 1), max(batch, 1)
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return Result{}, fmt.Errorf("floors: %s: %w", what, err)
	}
	cfg.MaxConns = int32(concurrency) + 1
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return Result{}, fmt.Errorf("floors: %s: %w", what, err)
	}
	defer pool.Close()
	if err := dbschema.Migrate(ctx, pool); err != nil {
		return Result{}, fmt.Errorf("floors: %s: %w", what, err)
	}
	_, completed, err := set.Chain()
	if err != nil {
		return Result{}, err
	}
	var conns []*pgxpool.Conn
	for range concurrency {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return Result{}, fmt.Errorf("floors: %s: %w", what, err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}

	m := &procstat.Meter{}
	m.AddGroup(PostgresServer, backends)
	m.AddPID(Bench, os.Getpid())
	var next atomic.Int64
	res, err := measure(m, len(set.Uploads), func() error {
		g, gctx := errgroup.WithContext(ctx)
		for range concurrency {
			g.Go(func() error {
				for {
					from := int(next.Add(int64(batch)) - int64(batch))
					if from >= len(completed) {
						return nil
					}
					if err := do(gctx, pool, completed[from:min(from+batch, len(completed))]); err != nil {
						return err
					}
				}
			})
		}
		return g.Wait()
	})
	if err != nil {
		return Result{}, fmt.Errorf("floors: %s: %w", what, err)
	}
	return res, nil
}

// lookUp reads the markers of one batch of completed uploads, one
// statement per step, and checks that it found them all.
func lookUp(ctx context.Context, pool *pgxpool.Pool, batch []*events.Event) error {
	ids := make([]string, len(batch))
	for i, ev := range batch {
		ids[i] = ev.ID
	}
	for _, step := range []string{events.StepBlob, events.StepRef} {
		rows, err := pool.Query(ctx, `SELECT upload_id, fingerprint, result FROM step_markers WHERE step = $1 AND upload_id = ANY($2)`, step, ids)
		if err != nil {
			return fmt.Errorf("markers: %w", err)
		}
		var (
			id, fp string
			result []byte
		)
		found, err := pgx.ForEachRow(rows, []any{&id, &fp, &result}, func() error { return nil })
		if err != nil {
			return fmt.Errorf("markers: %w", err)
		}
		if int(found.RowsAffected()) != len(ids) {
			return fmt.Errorf("markers: found %d %q markers of %d uploads", found.RowsAffected(), step, len(ids))
		}
	}
	return nil
}

// insert writes the rows of one batch of completed uploads in one
// transaction.
func insert(ctx context.Context, pool *pgxpool.Pool, batch []*events.Event) error {
	markers, args, err := markerRows(batch, events.StepBlob, events.StepRef)
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, markers, args...); err != nil {
			return fmt.Errorf("markers: %w", err)
		}
		if _, err := tx.Exec(ctx, refRowsSQL, refRows(batch)...); err != nil {
			return fmt.Errorf("references: %w", err)
		}
		return nil
	})
}

// markerRows is the statement that inserts the markers of steps for each
// completed upload of batch, with its arguments: "blob" records the
// object, "ref" the completed event.
func markerRows(batch []*events.Event, steps ...string) (string, []any, error) {
	var id, step, fp, result []string
	for _, ev := range batch {
		for _, s := range steps {
			r := string(ev.Data)
			if s == events.StepBlob {
				var err error
				if r, err = jsonOf(ev.Ref.Blob); err != nil {
					return "", nil, err
				}
			}
			id, step, fp, result = append(id, ev.ID), append(step, s), append(fp, ev.SHA256), append(result, r)
		}
	}
	return `
			INSERT INTO step_markers (upload_id, step, fingerprint, result)
			SELECT u, s, f, r::jsonb FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(u, s, f, r)
			ON CONFLICT (upload_id, step) DO NOTHING`, []any{id, step, fp, result}, nil
}

// refRowsSQL is refwriter's one statement: the rows, then each (owner,
// subject)'s current reference from the rows inserted. refRows are its
// arguments for a batch of completed uploads.
const refRowsSQL = `
			WITH ins AS (
				INSERT INTO upload_refs (id, owner, subject, blob_key, size, sha256, content_type, event_time)
				SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::timestamptz[])
				ORDER BY 1
				ON CONFLICT (id) DO NOTHING
				RETURNING id, owner, subject, event_time
			), moved AS (
				INSERT INTO subject_refs AS cur (owner, subject, upload_id, event_time)
				SELECT DISTINCT ON (owner, subject) owner, subject, id, event_time FROM ins
				ORDER BY owner, subject, event_time DESC, id DESC
				ON CONFLICT (owner, subject) DO UPDATE
				SET upload_id = EXCLUDED.upload_id, event_time = EXCLUDED.event_time, updated_at = now()
				WHERE (cur.event_time, cur.upload_id) < (EXCLUDED.event_time, EXCLUDED.upload_id)
			)
			SELECT count(*) FROM ins`

func refRows(batch []*events.Event) []any {
	n := len(batch)
	id, owner, subject, key, sha, ct := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	size, at := make([]int64, n), make([]time.Time, n)
	for i, ev := range batch {
		ref := ev.Ref
		id[i], owner[i], subject[i], key[i], sha[i], ct[i] = ref.ID, ref.Owner, ref.Subject, ref.Blob.Key, ref.Blob.SHA256, ref.Blob.ContentType
		size[i], at[i] = ref.Blob.Size, ref.EventTime
	}
	return []any{id, owner, subject, key, size, sha, ct, at}
}

func jsonOf(b events.Blob) (string, error) {
	data, err := json.Marshal(b)
	if err != nil {
		return "", fmt.Errorf("floors: %w", err)
	}
	return string(data), nil
}
