// Package refstore is refwriter's side effect: it records an upload's
// reference in Postgres, in the same transaction as the step's marker, and
// moves the subject's current reference forward in event time only.
package refstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/blobref/blobref/internal/steprun"
	"github.com/blobref/blobref/pkg/events"
)

// StepName is the step's name in markers, metrics and failpoints.
const StepName = "ref"

// Source is the CloudEvents source of the completed events it emits.
const Source = "/blobref/refwriter"

// metadataSHA256 is the object metadata key blobwriter stores the digest in.
const metadataSHA256 = "sha256"

// Bucket is the part of *blob.Bucket the writer reads: it checks that a
// blob is really there before referencing it.
type Bucket interface {
	Attributes(ctx context.Context, key string) (*blob.Attributes, error)
}

// Writer records references.
type Writer struct {
	// Bucket, when set, is checked for the blob before the reference is
	// written, so that no reference dangles even for a hand-made event.
	Bucket Bucket
}

// DependencyBucket names the bucket in outages.
const DependencyBucket = "bucket"

// Step is the pipeline step: blob_stored → reference row → completed.
func (w *Writer) Step() steprun.Step[events.Reference] {
	step := steprun.Step[events.Reference]{
		Name:     StepName,
		Consumer: events.RefWriterConsumer,
		Accepts:  events.TypeBlobStored,
		Effect:   w.check,
		InTx:     Insert,
		Next: func(ev *events.Event, ref events.Reference) (*events.Event, error) {
			return events.NewCompleted(ev, ref, Source)
		},
	}
	if w.Bucket != nil {
		step.Probes = map[string]steprun.Probe{DependencyBucket: w.probe}
	}
	return step
}

// probe reports whether the bucket answers: it reads the attributes of a
// key no upload has (upload ids never hold a dot), and finds none.
func (w *Writer) probe(ctx context.Context) error {
	_, err := w.Bucket.Attributes(ctx, "uploads/.probe")
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil
	}
	return err
}

// check verifies the blob the event describes and returns the reference to
// record. It writes nothing: the reference commits with the marker, in Insert.
func (w *Writer) check(ctx context.Context, ev *events.Event) (events.Reference, error) {
	b := *ev.Blob
	if w.Bucket != nil {
		attrs, err := w.Bucket.Attributes(ctx, b.Key)
		if gcerrors.Code(err) == gcerrors.NotFound {
			// Retried: the event may have overtaken a slow store; dead-lettered
			// once retries run out.
			return events.Reference{}, fmt.Errorf("blob %s of upload %s is not in the bucket", b.Key, ev.ID)
		}
		if err != nil {
			// Down or full is an outage of the bucket, not of the upload.
			return events.Reference{}, steprun.Dependency(DependencyBucket, fmt.Errorf("blob %s: %w", b.Key, err))
		}
		if attrs.Size != b.Size || attrs.Metadata[metadataSHA256] != b.SHA256 {
			return events.Reference{}, steprun.Permanent(events.ReasonDigestMismatch,
				fmt.Errorf("blob %s holds %d bytes with sha256 %q, the event says %d bytes with %s",
					b.Key, attrs.Size, attrs.Metadata[metadataSHA256], b.Size, b.SHA256))
		}
	}
	return events.Reference{ID: ev.ID, Subject: ev.Subject, Blob: b, EventTime: ev.Time}, nil
}

// Insert writes the reference rows of a batch and moves each subject's
// current reference to the newest of them (event time, then upload id) if it
// is newer than the current one. It runs in the markers' transaction, in
// one statement whatever the batch's size. A reference row that exists
// without its marker (written by hand) is accepted when it holds the same
// digest and refused as a conflict otherwise.
func Insert(ctx context.Context, tx pgx.Tx, items []steprun.Item[events.Reference]) ([]error, error) {
	n := len(items)
	ids, subjects, keys, types, shas := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	sizes, times := make([]int64, n), make([]time.Time, n)
	for i, it := range items {
		ref := it.Result
		ids[i], subjects[i], keys[i], sizes[i], shas[i], types[i], times[i] =
			ref.ID, ref.Subject, ref.Blob.Key, ref.Blob.Size, ref.Blob.SHA256, ref.Blob.ContentType, ref.EventTime
	}
	// Rows go in in id order and pointers in subject order, the same lock
	// order in every transaction: concurrent batches wait, never deadlock.
	// The pointers move to rows inserted by this statement only; the
	// foreign key sees them, as its check runs at the statement's end.
	rows, err := tx.Query(ctx, `
		WITH ins AS (
			INSERT INTO upload_refs (id, subject, blob_key, size, sha256, content_type, event_time)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::timestamptz[])
			ORDER BY 1
			ON CONFLICT (id) DO NOTHING
			RETURNING id, subject, event_time
		), moved AS (
			INSERT INTO subject_refs AS cur (subject, upload_id, event_time)
			SELECT DISTINCT ON (subject) subject, id, event_time FROM ins
			ORDER BY subject, event_time DESC, id DESC
			ON CONFLICT (subject) DO UPDATE
			SET upload_id = EXCLUDED.upload_id, event_time = EXCLUDED.event_time, updated_at = now()
			WHERE (cur.event_time, cur.upload_id) < (EXCLUDED.event_time, EXCLUDED.upload_id)
		)
		SELECT id FROM ins`, ids, subjects, keys, sizes, shas, types, times)
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

// checkExisting compares the rows Insert did not insert with the items:
// one error per item (nil when there is no conflict), or nil if none.
func checkExisting(ctx context.Context, tx pgx.Tx, items []steprun.Item[events.Reference], inserted []string) ([]error, error) {
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
	rows, err := tx.Query(ctx, `SELECT id, sha256 FROM upload_refs WHERE id = ANY($1::text[])`, others)
	if err != nil {
		return nil, fmt.Errorf("read references: %w", err)
	}
	stored := make(map[string]string, len(others))
	var id, sha string
	if _, err := pgx.ForEachRow(rows, []any{&id, &sha}, func() error { stored[id] = sha; return nil }); err != nil {
		return nil, fmt.Errorf("read references: %w", err)
	}
	var errs []error
	for i, it := range items {
		ref := it.Result
		if sha, ok := stored[ref.ID]; ok && !fresh[ref.ID] && sha != ref.Blob.SHA256 {
			if errs == nil {
				errs = make([]error, len(items))
			}
			errs[i] = steprun.Conflict("reference %s exists with sha256 %s, not %s", ref.ID, sha, ref.Blob.SHA256)
		}
	}
	return errs, nil
}

// Current returns the id of the subject's current reference.
func Current(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, subject string) (string, error) {
	var id string
	err := q.QueryRow(ctx, `SELECT upload_id FROM subject_refs WHERE subject = $1`, subject).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return id, err
}
