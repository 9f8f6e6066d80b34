// Package refstore is refwriter's side effect: it records an upload's
// reference in Postgres, in the same transaction as the step's marker, and
// moves the subject's current reference forward in event time only.
package refstore

import (
	"context"
	"errors"
	"fmt"

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

// Step is the pipeline step: blob_stored → reference row → completed.
func (w *Writer) Step() steprun.Step[events.Reference] {
	return steprun.Step[events.Reference]{
		Name:     StepName,
		Consumer: events.RefWriterConsumer,
		Accepts:  events.TypeBlobStored,
		Effect:   w.check,
		InTx:     Insert,
		Next: func(ev *events.Event, ref events.Reference) (*events.Event, error) {
			return events.NewCompleted(ev, ref, Source)
		},
	}
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
			return events.Reference{}, fmt.Errorf("blob %s: %w", b.Key, err)
		}
		if attrs.Size != b.Size || attrs.Metadata[metadataSHA256] != b.SHA256 {
			return events.Reference{}, steprun.Permanent(events.ReasonDigestMismatch,
				fmt.Errorf("blob %s holds %d bytes with sha256 %q, the event says %d bytes with %s",
					b.Key, attrs.Size, attrs.Metadata[metadataSHA256], b.Size, b.SHA256))
		}
	}
	return events.Reference{ID: ev.ID, Subject: ev.Subject, Blob: b, EventTime: ev.Time}, nil
}

// Insert writes the reference row and moves the subject's current
// reference to it if it is newer (event time, then upload id). It runs in the
// marker's transaction.
func Insert(ctx context.Context, tx pgx.Tx, _ *events.Event, ref events.Reference) error {
	tag, err := tx.Exec(ctx, `
		INSERT INTO upload_refs (id, subject, blob_key, size, sha256, content_type, event_time)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (id) DO NOTHING`,
		ref.ID, ref.Subject, ref.Blob.Key, ref.Blob.Size, ref.Blob.SHA256, ref.Blob.ContentType, ref.EventTime)
	if err != nil {
		return fmt.Errorf("insert reference %s: %w", ref.ID, err)
	}
	if tag.RowsAffected() == 0 {
		// A row without a marker: written by hand, not by this step.
		var sha string
		if err := tx.QueryRow(ctx, `SELECT sha256 FROM upload_refs WHERE id = $1`, ref.ID).Scan(&sha); err != nil {
			return fmt.Errorf("read reference %s: %w", ref.ID, err)
		}
		if sha != ref.Blob.SHA256 {
			return steprun.Conflict("reference %s exists with sha256 %s, not %s", ref.ID, sha, ref.Blob.SHA256)
		}
		return nil
	}
	_, err = tx.Exec(ctx, `
		INSERT INTO subject_refs AS cur (subject, upload_id, event_time)
		VALUES ($1, $2, $3)
		ON CONFLICT (subject) DO UPDATE
		SET upload_id = EXCLUDED.upload_id, event_time = EXCLUDED.event_time, updated_at = now()
		WHERE (cur.event_time, cur.upload_id) < (EXCLUDED.event_time, EXCLUDED.upload_id)`,
		ref.Subject, ref.ID, ref.EventTime)
	if err != nil {
		return fmt.Errorf("move current reference of %s: %w", ref.Subject, err)
	}
	return nil
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
