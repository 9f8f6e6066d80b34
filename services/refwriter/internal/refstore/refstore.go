// Package refstore is refwriter's side effect: it records an upload's
// reference in Postgres, in the same transaction as the step's marker, and
// moves its owner's current reference of the subject forward in event time
// only. Current references are kept per owner and subject: one owner's
// upload never moves another's.
package refstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"gocloud.dev/gcerrors"

	"github.com/blobref/blobref/internal/bucketdep"
	"github.com/blobref/blobref/pkg/events"
	"github.com/blobref/blobref/pkg/step"
)

// Bucket is the part of *blob.Bucket the writer reads: it checks that a
// blob is really there before referencing it, and probes the bucket while
// it is down or missing.
type Bucket = bucketdep.Bucket

// Writer records references.
type Writer struct {
	// Bucket, when set, is checked for the blob before the reference is
	// written, so that no reference dangles even for a hand-made event.
	Bucket Bucket
	// KeyPrefix is blobwriter's object key prefix [events.DefaultKeyPrefix]: an
	// event whose blob key is not KeyPrefix + id is refused as invalid, so
	// that no event can reference another upload's object.
	KeyPrefix string
	// MaxClockSkew is how far in the future an event's time may lie
	// [events.DefaultMaxClockSkew]; a later one is refused as invalid.
	MaxClockSkew time.Duration
	// Now is the clock [time.Now].
	Now func() time.Time
}

// DependencyBucket names the bucket in outages.
const DependencyBucket = bucketdep.Name

// Step is the pipeline step: blob_stored → reference row → completed.
func (w *Writer) Step() step.Step[events.Reference] {
	s := step.Step[events.Reference]{
		Name:     events.RefWriterConsumer.Step,
		Consumes: events.RefWriterConsumer.Consumes,
		Durable:  events.RefWriterConsumer.Durable,
		// check only reads; the reference commits with the marker, in
		// Insert: no claim is needed to keep two runs of it apart.
		ReadOnly:  true,
		Effect:    w.check,
		InTx:      Insert,
		QueueInTx: QueueInsert,
		Emit:      next,
	}
	if w.Bucket != nil {
		s.Probes = map[string]step.Probe{DependencyBucket: bucketdep.Probe(w.Bucket, w.Key(".probe"))}
	}
	return s
}

// next builds the completed event of the recorded reference ref. An event
// that names another owner or subject than the one recorded under its id is
// a conflict: it may not re-emit, nor claim, someone else's reference.
func next(ev *events.Event, ref events.Reference) (*events.Event, error) {
	if ref.Owner != "" && ref.Owner != ev.Owner || ref.Subject != ev.Subject {
		return nil, step.Conflict("upload %s is recorded for owner %q and subject %q, the event names %q and %q",
			ev.ID, clip(ref.Owner), clip(ref.Subject), clip(ev.Owner), clip(ev.Subject))
	}
	return events.NewCompleted(ev, ref, events.SourceRefWriter)
}

// Key is the object key of upload id.
func (w *Writer) Key(id string) string {
	if w.KeyPrefix == "" {
		return events.DefaultKeyPrefix + id
	}
	return w.KeyPrefix + id
}

// check verifies the event and the blob it describes and returns the
// reference to record. It writes nothing: the reference commits with the
// marker, in Insert.
func (w *Writer) check(ctx context.Context, ev *events.Event) (events.Reference, error) {
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	if err := ev.CheckTime(now(), w.MaxClockSkew); err != nil {
		return events.Reference{}, err
	}
	b := *ev.Blob
	if want := w.Key(ev.ID); b.Key != want {
		return events.Reference{}, step.Permanent(events.ReasonInvalid,
			fmt.Errorf("blob key %q of upload %s is not %q", clip(b.Key), ev.ID, want))
	}
	if w.Bucket != nil {
		attrs, err := w.Bucket.Attributes(ctx, b.Key)
		if gcerrors.Code(err) == gcerrors.NotFound {
			// Retried: the event may have overtaken a slow store; dead-lettered
			// once retries run out, unless the bucket itself is missing (the
			// runner's probe tells): then it is an outage.
			return events.Reference{}, bucketdep.Err(fmt.Errorf("blob %s of upload %s is not in the bucket: %w", b.Key, ev.ID, err))
		}
		if err != nil {
			// Down or full is an outage of the bucket, not of the upload.
			return events.Reference{}, bucketdep.Err(fmt.Errorf("blob %s: %w", b.Key, err))
		}
		if attrs.Size != b.Size || attrs.Metadata[events.MetadataSHA256] != b.SHA256 {
			return events.Reference{}, step.Permanent(events.ReasonDigestMismatch,
				fmt.Errorf("blob %s holds %d bytes with sha256 %q, the event says %d bytes with %s",
					b.Key, attrs.Size, attrs.Metadata[events.MetadataSHA256], b.Size, b.SHA256))
		}
	}
	return events.Reference{ID: ev.ID, Owner: ev.Owner, Subject: ev.Subject, Blob: b, EventTime: ev.Time}, nil
}

// clip shortens untrusted text quoted in an error.
func clip(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max], "") + "..."
}

// insertRefs writes the reference rows of a batch and moves each owner's
// current reference of each subject to the newest of them; %s is what an
// existing row does to the insert. Rows go in in id order and pointers in
// (owner, subject) order, the same lock order in every transaction:
// concurrent batches wait, never deadlock. The pointers move to rows
// inserted by this statement only; the foreign key sees them, as its check
// runs at the statement's end.
const insertRefs = `
	WITH ins AS (
		INSERT INTO upload_refs (id, owner, subject, blob_key, size, sha256, content_type, event_time)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::timestamptz[])
		ORDER BY 1
		%s
		RETURNING id, owner, subject, event_time
	), moved AS (
		INSERT INTO subject_refs AS cur (owner, subject, upload_id, event_time)
		SELECT DISTINCT ON (owner, subject) owner, subject, id, event_time FROM ins
		ORDER BY owner, subject, event_time DESC, id DESC
		ON CONFLICT (owner, subject) DO UPDATE
		SET upload_id = EXCLUDED.upload_id, event_time = EXCLUDED.event_time, updated_at = now()
		WHERE (cur.event_time, cur.upload_id) < (EXCLUDED.event_time, EXCLUDED.upload_id)
	)
	SELECT id FROM ins`

var (
	// insertOrSkip skips a row that exists: Insert then checks it.
	insertOrSkip = fmt.Sprintf(insertRefs, "ON CONFLICT (id) DO NOTHING")
	// insertNew fails on a row that exists (QueueInsert).
	insertNew = fmt.Sprintf(insertRefs, "")
)

// refArgs are the arguments of insertRefs for items.
func refArgs(items []step.Item[events.Reference]) []any {
	n := len(items)
	ids, owners, subjects, keys := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	types, shas := make([]string, n), make([]string, n)
	sizes, times := make([]int64, n), make([]time.Time, n)
	for i, it := range items {
		ref := it.Result
		ids[i], owners[i], subjects[i], keys[i], sizes[i], shas[i], types[i], times[i] =
			ref.ID, ref.Owner, ref.Subject, ref.Blob.Key, ref.Blob.Size, ref.Blob.SHA256, ref.Blob.ContentType, ref.EventTime
	}
	return []any{ids, owners, subjects, keys, sizes, shas, types, times}
}

// Insert writes the reference rows of a batch and moves each owner's current
// reference of each subject to the newest of them (event time, then upload
// id) if it is newer than the current one. It runs in the markers'
// transaction, in one statement whatever the batch's size. A reference row
// that exists without its marker (written by hand) is accepted when it holds
// the same digest and subject and the same owner (or none), and refused as a
// conflict otherwise.
func Insert(ctx context.Context, tx pgx.Tx, items []step.Item[events.Reference]) ([]error, error) {
	n := len(items)
	rows, err := tx.Query(ctx, insertOrSkip, refArgs(items)...)
	if err != nil {
		return nil, fmt.Errorf("insert %d references: %w", n, err)
	}
	inserted, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("insert %d references: %w", n, err)
	}
	if len(inserted) < n {
		// Rows without a marker: written by hand, not by this step.
		return checkExisting(ctx, tx, items, inserted)
	}
	return nil, nil
}

// QueueInsert is Insert for a batch whose markers are all new, queued with
// them (step.Step.QueueInTx): the same statement, which fails on a row that
// exists, so that the runner records the batch again through Insert, which
// tells whether that row is the same reference or a conflict.
func QueueInsert(b *pgx.Batch, items []step.Item[events.Reference]) {
	b.Queue(insertNew, refArgs(items)...)
}

// checkExisting compares the rows Insert did not insert with the items:
// one error per item (nil when there is no conflict), or nil if none.
func checkExisting(ctx context.Context, tx pgx.Tx, items []step.Item[events.Reference], inserted []string) ([]error, error) {
	fresh := make(map[string]bool, len(inserted))
	for _, id := range inserted {
		fresh[id] = true
	}
	var others []string
	for _, it := range items {
		if !fresh[it.Result.ID] {
			others = append(others, it.Result.ID)
		}
	}
	rows, err := tx.Query(ctx, `SELECT id, owner, subject, sha256 FROM upload_refs WHERE id = ANY($1::text[])`, others)
	if err != nil {
		return nil, fmt.Errorf("read references: %w", err)
	}
	type row struct{ owner, subject, sha string }
	stored := make(map[string]row, len(others))
	var (
		id string
		r  row
	)
	if _, err := pgx.ForEachRow(rows, []any{&id, &r.owner, &r.subject, &r.sha}, func() error { stored[id] = r; return nil }); err != nil {
		return nil, fmt.Errorf("read references: %w", err)
	}
	var errs []error
	for i, it := range items {
		ref := it.Result
		r, ok := stored[ref.ID]
		if !ok || fresh[ref.ID] {
			continue
		}
		var err error
		switch {
		case r.sha != ref.Blob.SHA256:
			err = step.Conflict("reference %s exists with sha256 %s, not %s", ref.ID, r.sha, ref.Blob.SHA256)
		case r.owner != "" && r.owner != ref.Owner || r.subject != ref.Subject:
			err = step.Conflict("reference %s exists for owner %q and subject %q, not %q and %q",
				ref.ID, clip(r.owner), clip(r.subject), clip(ref.Owner), clip(ref.Subject))
		default:
			continue
		}
		if errs == nil {
			errs = make([]error, len(items))
		}
		errs[i] = err
	}
	return errs, nil
}

// Current returns the id of owner's current reference of subject, "" when
// there is none.
func Current(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, owner, subject string) (string, error) {
	var id string
	err := q.QueryRow(ctx, `SELECT upload_id FROM subject_refs WHERE owner = $1 AND subject = $2`, owner, subject).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return id, err
}
