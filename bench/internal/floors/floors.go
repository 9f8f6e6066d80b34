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
//     Postgres).
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
func JetStream(ctx context.Context, o JetStreamOptions, set *load.Set) (JetStreamResults, error) {
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
	}{{events.BlobWriterConsumer, &storedNext}, {events.RefWriterConsumer, &completedNext}}
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
		g.Go(func() error { return relay(gctx, js, cons, set, st.next, o.Batch) })
	}

	ids := set.IDs()
	meter := natsMeter(o.PID)
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
		results[i], err = measure(meter, len(m.requests), func() error {
			published := make([]int64, len(m.requests))
			if err := producer.Publish(gctx, m.requests, published, 0); err != nil {
				return err
			}
			_, err := tracker.Wait(gctx, ids, nil, time.Minute)
			return err
		})
		tracker.Close()
		if err != nil {
			break
		}
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

// relay is one stage of floor (a): pull up to batch messages, publish the
// next event of each (the pass's, from next) asynchronously, and ack each
// message once its publish is acknowledged, until ctx ends.
func relay(ctx context.Context, js jetstream.JetStream, cons jetstream.Consumer, set *load.Set, next *atomic.Pointer[[]*nats.Msg], batch int) error {
	type inflight struct {
		msg jetstream.Msg
		paf jetstream.PubAckFuture
	}
	pending := make([]inflight, 0, batch)
	settle := func() error {
		for _, p := range pending {
			select {
			case <-p.paf.Ok():
			case err := <-p.paf.Err():
				return fmt.Errorf("publish %s: %w", p.paf.Msg().Subject, err)
			}
			if err := p.msg.Ack(); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
		}
		pending = pending[:0]
		return nil
	}
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
			subject := msg.Subject()
			i := set.Index(subject[strings.LastIndexByte(subject, '.')+1:])
			if i < 0 {
				cancel()
				return fmt.Errorf("a message on %s, not of this floor", subject)
			}
			paf, err := js.PublishMsgAsync((*next.Load())[i], jetstream.WithStallWait(time.Minute))
			if err != nil {
				cancel()
				return fmt.Errorf("publish: %w", err)
			}
			pending = append(pending, inflight{msg, paf})
		}
		cancel()
		if err := settle(); err != nil {
			return err
		}
	}
	return nil
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
	n := len(batch)
	var (
		markerID, markerStep, markerFP, markerResult []string
		id, owner, subject, key, sha, ct             = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		size                                         = make([]int64, n)
		at                                           = make([]time.Time, n)
	)
	for i, ev := range batch {
		ref := ev.Ref
		blobJSON, err := jsonOf(ref.Blob)
		if err != nil {
			return err
		}
		markerID = append(markerID, ev.ID, ev.ID)
		markerStep = append(markerStep, events.StepBlob, events.StepRef)
		markerFP = append(markerFP, ev.SHA256, ev.SHA256)
		markerResult = append(markerResult, blobJSON, string(ev.Data))
		id[i], owner[i], subject[i], key[i], sha[i], ct[i] = ref.ID, ref.Owner, ref.Subject, ref.Blob.Key, ref.Blob.SHA256, ref.Blob.ContentType
		size[i], at[i] = ref.Blob.Size, ref.EventTime
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO step_markers (upload_id, step, fingerprint, result)
			SELECT u, s, f, r::jsonb FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(u, s, f, r)
			ON CONFLICT (upload_id, step) DO NOTHING`, markerID, markerStep, markerFP, markerResult); err != nil {
			return fmt.Errorf("markers: %w", err)
		}
		// refwriter's one statement: the rows, then each (owner, subject)'s
		// current reference from the rows inserted.
		if _, err := tx.Exec(ctx, `
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
			SELECT count(*) FROM ins`, id, owner, subject, key, size, sha, ct, at); err != nil {
			return fmt.Errorf("references: %w", err)
		}
		return nil
	})
}

func jsonOf(b events.Blob) (string, error) {
	data, err := json.Marshal(b)
	if err != nil {
		return "", fmt.Errorf("floors: %w", err)
	}
	return string(data), nil
}
