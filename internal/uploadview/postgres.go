package uploadview

import (
	"context"
	"encoding/json"
	"time"

	"github.com/blobref/blobref/pkg/events"
)

// selectUploads reads what Postgres knows of each of the ids $1: ingest's
// record, the markers of the two steps and the reference, each of which
// may be missing.
const selectUploads = `
SELECT k.id,
	u.id IS NOT NULL, coalesce(u.caller, ''), coalesce(u.idempotency_key, ''), coalesce(u.subject, ''),
	coalesce(u.content_type, ''), coalesce(u.size, 0), coalesce(u.sha256, ''), coalesce(u.dataref, ''),
	u.created_at, u.published_at, coalesce(u.publish_count, 0),
	CASE WHEN u.published_at IS NULL AND u.claimed_until > now() THEN u.claimed_until END,
	b.created_at, coalesce(b.fingerprint, ''), b.result,
	r.created_at,
	ref.id IS NOT NULL, coalesce(ref.owner, ''), coalesce(ref.subject, ''), coalesce(ref.blob_key, ''),
	coalesce(ref.size, 0), coalesce(ref.sha256, ''), coalesce(ref.content_type, ''), ref.event_time, ref.created_at,
	EXISTS (SELECT 1 FROM subject_refs s WHERE s.upload_id = k.id)
FROM unnest($1::text[]) AS k(id)
LEFT JOIN ingest_uploads u ON u.id = k.id
LEFT JOIN step_markers b ON b.upload_id = k.id AND b.step = '` + events.StepBlob + `'
LEFT JOIN step_markers r ON r.upload_id = k.id AND r.step = '` + events.StepRef + `'
LEFT JOIN upload_refs ref ON ref.id = k.id`

// loadFacts returns the facts Postgres holds of each of ids, by id.
func (v *View) loadFacts(ctx context.Context, ids []string) (map[string]*facts, error) {
	rows, err := v.Pool.Query(ctx, selectUploads, ids)
	if err != nil {
		return nil, pgError("read uploads", err)
	}
	defer rows.Close()
	out := make(map[string]*facts, len(ids))
	for rows.Next() {
		var (
			f                                       facts
			hasRecord, hasRef, current              bool
			rec                                     Record
			createdAt, publishedAt, claimedUntil    *time.Time
			blobAt, refAt, refEventTime, refCreated *time.Time
			blobResult                              []byte
			ref                                     events.Reference
		)
		err := rows.Scan(&f.id,
			&hasRecord, &rec.Caller, &rec.IdempotencyKey, &f.subject,
			&f.contentType, &f.size, &f.sha256, &rec.DataRef,
			&createdAt, &publishedAt, &rec.PublishCount, &claimedUntil,
			&blobAt, &f.blobSHA256, &blobResult,
			&refAt,
			&hasRef, &ref.Owner, &ref.Subject, &ref.Blob.Key,
			&ref.Blob.Size, &ref.Blob.SHA256, &ref.Blob.ContentType, &refEventTime, &refCreated,
			&current)
		if err != nil {
			return nil, pgError("read uploads", err)
		}
		if hasRecord {
			rec.CreatedAt, rec.PublishedAt, rec.ClaimedUntil = createdAt.UTC(), utc(publishedAt), utc(claimedUntil)
			f.record = &rec
		}
		f.blobAt, f.refAt = utc(blobAt), utc(refAt)
		if blobAt != nil {
			var b events.Blob
			if json.Unmarshal(blobResult, &b) == nil && b.Key != "" {
				f.blob = &b
			}
		}
		if hasRef {
			ref.ID, ref.EventTime = f.id, refEventTime.UTC()
			f.ref = &Reference{Reference: ref, RecordedAt: refCreated.UTC(), Current: current}
		}
		out[f.id] = &f
	}
	if err := rows.Err(); err != nil {
		return nil, pgError("read uploads", err)
	}
	return out, nil
}

// utc returns a copy of *t in UTC, or nil.
func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
