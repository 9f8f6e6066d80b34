package uploads

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
)

// A batch of jobs is recorded, published and its publishes recorded
// together: one Postgres round trip records every new upload of the batch
// (and decides who owns each key), the request events are published
// asynchronously and their acknowledgements awaited together, and one more
// round trip records the publishes.
const (
	// batchLanes is how many batches are in flight at once: one, and a
	// second once a batch stalls (batchSpill). A batch grows only while
	// every lane is busy, and each costs two round trips and a burst of
	// publishes whatever its size: more lanes make more, smaller batches,
	// here and in the consumers the bursts reach. A second lane at once
	// would overlap one batch's Postgres round trip with the other's
	// acknowledgements; measured here that costs more than it saves: one
	// lane took 12% off the CPU per upload at 64 clients, with no loss of
	// rate or p50 at 1, 16, 64 or 256 clients or in accept only
	// (docs/benchmarks.md, "What bounds the HTTP path" and the eleventh
	// pass).
	batchLanes = 2
	// batchSpill is how long the requests queued behind a batch wait
	// before the second lane takes them: far longer than a batch takes
	// (a few milliseconds, tens with 128 uploads), and short beside a
	// request's patience. A batch that stalls (Postgres locked or its
	// pool exhausted, JetStream slow to acknowledge) then holds up only
	// its own requests: the next ones reach the pool's acquire timeout and
	// are answered 503, or recorded, beside it.
	batchSpill = 100 * time.Millisecond
	// batchSize is the most jobs in one batch.
	batchSize = 128
)

// job is one request's part in a batch: a new upload to record and
// publish, or a known one to publish again (a retry's re-drive, or the
// first publish of an upload whose recording request gave up).
type job struct {
	// ctx is the request's context for failpoints; the batch has its own.
	ctx context.Context
	rec record
	// inline holds the bytes of an inline upload.
	inline []byte
	// insert: record rec first; otherwise rec is recorded and is published
	// as its PublishCount says.
	insert bool
	// holder is the staging lease the record replaces (a staged upload).
	holder string

	// The outcome.
	//
	// won: this job recorded the upload. An insert that lost has the
	// upload as it was (snap), or none when it was out of sight: recorded
	// by a concurrent request, or leased by one still staging.
	won  bool
	snap *snapshot
	// at is when JetStream acknowledged the publish, seq the sequence it
	// stored the request at.
	at  time.Time
	seq uint64
	err error

	// published: JetStream has the request. A job that recorded its upload
	// and did not publish it gave up on it: its claim is released.
	published bool
	ack       jetstream.PubAckFuture
	// span is the publish's span while it is under way (tracing on).
	span trace.Span
}

// flush runs one batch: record, publish, record the publishes. The batch
// runs on a context of its own, which the requests going away cannot
// cancel; the claims it takes outlive it (recordTimeout).
func (s *Service) flush(jobs []*job) {
	ctx, cancel := context.WithTimeout(context.Background(), s.recordTimeout())
	defer cancel()
	s.Metrics.batch(len(jobs))

	s.insert(ctx, jobs)
	var out []*job
	for _, j := range jobs {
		if j.err != nil || (j.insert && !j.won) {
			continue
		}
		if j.insert {
			if j.err = inject(j.ctx, "after-record"); j.err != nil {
				continue
			}
		}
		out = append(out, j)
	}
	s.publish(ctx, out)
	s.recordPublishes(ctx, jobs)
	for _, j := range out {
		if j.published && j.err == nil {
			s.Metrics.published(j.rec.PublishCount > 0)
			j.err = inject(j.ctx, "after-publish")
		}
	}
}

// recordUploads inserts the new uploads of a batch, with their inline bytes
// as the outbox and a claim, unless the key is recorded already or leased by
// another request that is staging its body, and lists them incomplete for
// the completer until the read model records them completed. It deletes the
// leases the records replace. For each job it returns whether it won and,
// if it lost, the upload as it stood.
//
// The inline bytes of the whole batch travel as one bytea ($13), each
// upload's at its offset (from 1) and length ($10, $11; NULL for none):
// an array of bodies would be encoded into a buffer that grows a quarter
// at a time, copying the batch's bytes several times over (payloads).
const recordUploads = `
WITH v AS (
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
	                     $7::text[], $8::text[], $9::timestamptz[], $10::int[], $11::int[], $12::text[])
	AS v(id, caller, idempotency_key, subject, content_type, size, sha256, dataref, created_at, payload_at, payload_len, holder)
), freed AS (
	DELETE FROM ingest_leases l USING v WHERE l.id = v.id AND l.holder = v.holder
), ins AS (
	INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type, size, sha256, dataref,
	                            created_at, payload, claimed_until)
	SELECT v.id, v.caller, v.idempotency_key, v.subject, v.content_type, v.size, v.sha256, v.dataref,
	       v.created_at, substring($13::bytea FROM v.payload_at FOR v.payload_len),
	       now() + $14::bigint * interval '1 microsecond'
	FROM v
	WHERE NOT EXISTS (SELECT FROM ingest_leases l
	                  WHERE l.id = v.id AND l.expires_at > now() AND l.holder IS DISTINCT FROM v.holder)
	ON CONFLICT (id) DO NOTHING
	RETURNING id
), incomplete AS (
	INSERT INTO ingest_incomplete (id) SELECT id FROM ins
	ON CONFLICT (id) DO NOTHING
)
SELECT v.id, ins.id IS NOT NULL, ` + snapshotColumns + `
FROM v
LEFT JOIN ins ON ins.id = v.id
LEFT JOIN ingest_uploads u ON u.id = v.id AND ins.id IS NULL` + snapshotJoins

// insert records the insert jobs of a batch in one round trip. Of two jobs
// with one key only the first is sent: the other lost to it.
func (s *Service) insert(ctx context.Context, jobs []*job) {
	seen := map[string]bool{}
	var batch []*job
	for _, j := range jobs {
		if j.insert && !seen[j.rec.ID] {
			seen[j.rec.ID] = true
			batch = append(batch, j)
		}
	}
	if len(batch) > 0 {
		s.insertBatch(ctx, batch)
	}
}

// insertBatch runs recordUploads for jobs of distinct keys. When Postgres
// refuses the statement for what a job holds, each job is recorded on its
// own, so that one bad request fails alone.
func (s *Service) insertBatch(ctx context.Context, jobs []*job) {
	err := s.insertRows(ctx, jobs)
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return
	case errors.As(err, &pgErr) && len(jobs) > 1:
		for _, j := range jobs {
			s.insertBatch(ctx, []*job{j})
		}
		return
	case errors.As(err, &pgErr) && strings.HasPrefix(pgErr.Code, "22"): // data exception
		err = fmt.Errorf("uploads: record upload %s: %w", jobs[0].rec.ID, err)
	default:
		err = unavailable("record upload", err)
	}
	for _, j := range jobs {
		j.won, j.snap, j.err = false, nil, err
	}
}

// insertRows runs recordUploads for jobs.
func (s *Service) insertRows(ctx context.Context, jobs []*job) error {
	byID := make(map[string]*job, len(jobs))
	for _, j := range jobs {
		byID[j.rec.ID] = j
	}
	rows, err := s.Pool.Query(ctx, recordUploads, recordArgs(jobs, s.recordTimeout())...)
	if err != nil {
		return err
	}
	var (
		id  string
		won bool
		c   snapshotScan
	)
	_, err = pgx.ForEachRow(rows, append([]any{&id, &won}, c.targets()...), func() error {
		j := byID[id]
		if j == nil {
			return fmt.Errorf("recorded upload %s that was not asked for", id)
		}
		j.won = won
		if snap, ok := c.snapshot(); ok && !won {
			j.snap = &snap
		}
		return nil
	})
	return err
}

// recordArgs are recordUploads' arguments for jobs, of distinct keys, whose
// claims last claim.
func recordArgs(jobs []*job, claim time.Duration) []any {
	var (
		ids, callers, keys, subjects, types, shas, datarefs, hold []*string
		sizes                                                     []int64
		created                                                   []time.Time
	)
	str := func(v string) *string {
		if v == "" {
			return nil
		}
		return &v
	}
	for _, j := range jobs {
		r := j.rec
		ids, callers, keys = append(ids, &r.ID), append(callers, &r.Caller), append(keys, &r.Key)
		subjects, types, shas = append(subjects, &r.Subject), append(types, &r.ContentType), append(shas, &r.SHA256)
		datarefs, hold = append(datarefs, str(r.DataRef)), append(hold, str(j.holder))
		sizes, created = append(sizes, r.Size), append(created, r.CreatedAt)
	}
	at, lens, all := payloads(jobs)
	return []any{ids, callers, keys, subjects, types, sizes, shas, datarefs, created, at, lens, hold, all,
		claim.Microseconds()}
}

// payloads lays the inline bytes of jobs end to end in one slice, and
// gives the offset (from 1, as SQL's substring counts) and length of each
// job's, or nil for a job without.
func payloads(jobs []*job) (at, lens []*int32, all []byte) {
	n := 0
	for _, j := range jobs {
		n += len(j.inline)
	}
	at, lens, all = make([]*int32, len(jobs)), make([]*int32, len(jobs)), make([]byte, 0, n)
	for i, j := range jobs {
		if j.inline == nil {
			continue
		}
		// A batch holds at most batchSize uploads, each inline only up to
		// INLINE_THRESHOLD (under 1 MiB): 128 MiB in all at most, far
		// below the 2 GiB an int4 offset reaches.
		from, size := int32(len(all)+1), int32(len(j.inline)) // #nosec G115 -- at most 128 MiB in all, as said above
		at[i], lens[i] = &from, &size
		all = append(all, j.inline...)
	}
	return at, lens, all
}

// publish publishes the request event of each job asynchronously, and waits
// for JetStream's acknowledgements together. The first publish of an
// upload uses its id as Nats-Msg-Id (a retry of a publish that may have
// landed is de-duplicated); re-drive n is a new message, <id>-<n>. Two
// requests re-driving one upload at once publish one message id: JetStream
// keeps one.
func (s *Service) publish(ctx context.Context, jobs []*job) {
	for _, j := range jobs {
		msg, err := requestMsg(j.rec, j.inline, s.startPublish(j))
		if err != nil {
			j.err = err
			continue
		}
		if j.ack, err = s.JS.PublishMsgAsync(msg); err != nil {
			j.err = unavailable("publish", err)
		}
	}
	defer func() {
		for _, j := range jobs {
			endPublish(j)
		}
	}()
	timeout := time.NewTimer(s.publishTimeout())
	defer timeout.Stop()
	for _, j := range jobs {
		if j.ack == nil {
			continue
		}
		select {
		case ack := <-j.ack.Ok():
			j.published, j.seq = true, ack.Sequence
		case err := <-j.ack.Err():
			j.err = unavailable("publish", err)
		case <-timeout.C:
			j.err = unavailable("publish", fmt.Errorf("no acknowledgement within %v", s.publishTimeout()))
			timeout.Reset(0) // the rest have had as long
		case <-ctx.Done():
			j.err = unavailable("publish", ctx.Err())
		}
	}
	at := s.now()
	for _, j := range jobs {
		j.at = at
	}
}

// requestMsg is the request event of rec, carrying trace context sc (when
// valid).
func requestMsg(rec record, inline []byte, sc trace.SpanContext) (*nats.Msg, error) {
	req := events.Request{
		ID: rec.ID, Source: events.SourceIngest, Owner: rec.Caller, Subject: rec.Subject, ContentType: rec.ContentType,
		Time: rec.CreatedAt, SHA256: rec.SHA256,
	}
	if rec.DataRef != "" {
		req.DataRef = rec.DataRef
	} else {
		req.Data = inline
	}
	ev, err := events.NewRequested(req)
	if err != nil {
		return nil, fmt.Errorf("uploads: request event of %s: %w", rec.ID, err)
	}
	step.SetTraceContext(ev, sc)
	msgID := rec.ID
	if rec.PublishCount > 0 {
		msgID = fmt.Sprintf("%s-%d", rec.ID, rec.PublishCount)
	}
	msg, err := ev.Msg(msgID)
	if err != nil {
		return nil, fmt.Errorf("uploads: request event of %s: %w", rec.ID, err)
	}
	return msg, nil
}

// recordPublishes records the batch's publishes, clearing the outbox and
// the claim, and releases the claims of the uploads it gave up on, in one
// round trip. publish_count moves from the count the publish was made with
// only: of two requests that re-drove an upload at once, one counts.
const recordPublishes = `
UPDATE ingest_uploads u
SET published_at  = coalesce(v.at, u.published_at),
    published_seq = greatest(u.published_seq, v.seq),
    publish_count = u.publish_count + (v.at IS NOT NULL)::int,
    payload       = CASE WHEN v.at IS NULL THEN u.payload END,
    claimed_until = NULL
FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::bigint[]) AS v(id, n, at, seq)
WHERE u.id = v.id AND u.publish_count = v.n`

func (s *Service) recordPublishes(ctx context.Context, jobs []*job) {
	var (
		ids    []string
		counts []int
		ats    []*time.Time
		seqs   []*int64
		done   []*job
	)
	for _, j := range jobs {
		switch {
		case j.published:
			at, seq := j.at, int64(j.seq) // #nosec G115 -- a JetStream stream sequence, below 2^63
			ids, counts, ats, done = append(ids, j.rec.ID), append(counts, j.rec.PublishCount), append(ats, &at), append(done, j)
			seqs = append(seqs, &seq)
		case j.insert && j.won: // gave up: release the claim
			ids, counts, ats = append(ids, j.rec.ID), append(counts, j.rec.PublishCount), append(ats, nil)
			seqs = append(seqs, nil)
		}
	}
	if len(ids) == 0 {
		return
	}
	if _, err := s.Pool.Exec(ctx, recordPublishes, ids, counts, ats, seqs); err != nil {
		// JetStream has these requests; a retry publishes them again, and
		// the Nats-Msg-Id or the markers make that harmless.
		for _, j := range done {
			j.err = unavailable("record publish", err)
		}
	}
}
