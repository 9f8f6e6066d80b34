-- +goose Up
-- ingest_incomplete lists the uploads ingest recorded that its read model has
-- not recorded completed: the completer's rounds read it (claimDue), in place
-- of 00031's mark and partial index. ingest's record statement inserts an
-- upload's row with its record, and the read model's statement that records
-- the completion deletes it. The mark it replaces changed a column of the
-- partial index's predicate, so each completion wrote a new version of the
-- record (no heap-only update), an entry in each of the record's other
-- indexes and a row lock; taking an upload off the list writes two records
-- of WAL, the row lock and the delete.
CREATE TABLE ingest_incomplete (
    id text PRIMARY KEY
);

INSERT INTO ingest_incomplete (id)
SELECT id FROM ingest_uploads WHERE completed_at IS NULL;

DROP INDEX ingest_uploads_not_completed;
ALTER TABLE ingest_uploads DROP COLUMN completed_at;

-- id is derived from (caller, idempotency_key) (uploads.ID), so the primary
-- key holds the two unique: this constraint's index only cost each record an
-- entry.
ALTER TABLE ingest_uploads DROP CONSTRAINT ingest_uploads_caller_idempotency_key_key;

ANALYZE ingest_incomplete;

-- +goose Down
ALTER TABLE ingest_uploads ADD CONSTRAINT ingest_uploads_caller_idempotency_key_key UNIQUE (caller, idempotency_key);
ALTER TABLE ingest_uploads ADD COLUMN completed_at timestamptz;

-- The records not listed as incomplete are marked completed at the read
-- model's time (at their creation, for one the read model no longer has).
UPDATE ingest_uploads u SET completed_at = coalesce(rm.completed_at, u.created_at)
FROM ingest_uploads x
LEFT JOIN ingest_upload_view rm ON rm.id = x.id
WHERE x.id = u.id AND NOT EXISTS (SELECT FROM ingest_incomplete i WHERE i.id = u.id);

CREATE INDEX ingest_uploads_not_completed ON ingest_uploads (id) WHERE completed_at IS NULL;
DROP TABLE ingest_incomplete;
ANALYZE ingest_uploads;
