package uploads

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"

	"github.com/blobref/blobref/pkg/events"
)

// selectCurrentReference reads an owner's current reference of a subject
// from refwriter's tables: subject_refs, keyed by (owner, subject), points
// at the reference row in upload_refs.
const selectCurrentReference = `
SELECT r.id, r.owner, r.subject, r.blob_key, r.size, r.sha256, r.content_type, r.event_time
FROM subject_refs s
JOIN upload_refs r ON r.id = s.upload_id
WHERE s.owner = $1 AND s.subject = $2`

// CurrentReference returns owner's current reference of subject: the
// newest upload of owner to subject that refwriter recorded. Another
// owner's references of the same subject are never seen.
//
// Errors: ErrNoReference, *UnavailableError.
func (s *Service) CurrentReference(ctx context.Context, owner, subject string) (events.Reference, error) {
	var ref events.Reference
	err := s.Pool.QueryRow(ctx, selectCurrentReference, owner, subject).Scan(
		&ref.ID, &ref.Owner, &ref.Subject, &ref.Blob.Key, &ref.Blob.Size, &ref.Blob.SHA256, &ref.Blob.ContentType, &ref.EventTime)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return events.Reference{}, ErrNoReference
	case err != nil:
		return events.Reference{}, unavailable("read current reference", err)
	}
	ref.EventTime = ref.EventTime.UTC()
	return ref, nil
}
