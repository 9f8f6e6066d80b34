-- +goose Up
-- completed_at is when ingest's read model recorded the upload completed (its
-- completed_at in ingest_upload_view), set by the statement that records it;
-- NULL while the upload is pending, stored or dead-lettered. The completer's
-- rounds read the uploads not completed through the partial index below, so
-- that a round costs what is unfinished, not every upload kept until the
-- retention job deletes it. Once set it stays set: the read model's
-- completed_at only moves to an earlier completion, never back to NULL.
ALTER TABLE ingest_uploads ADD COLUMN completed_at timestamptz;

-- The uploads completed before this migration, once, from the read model.
UPDATE ingest_uploads u SET completed_at = rm.completed_at
FROM ingest_upload_view rm
WHERE rm.id = u.id AND rm.completed_at IS NOT NULL AND rm.ref IS NOT NULL;

-- Keyed on id alone: a column that changes with each publish (published_at,
-- claimed_until) would end the heap-only updates that record a publish or
-- a claim (00021).
CREATE INDEX ingest_uploads_not_completed ON ingest_uploads (id) WHERE completed_at IS NULL;
ANALYZE ingest_uploads;

-- +goose Down
DROP INDEX ingest_uploads_not_completed;
ALTER TABLE ingest_uploads DROP COLUMN completed_at;
