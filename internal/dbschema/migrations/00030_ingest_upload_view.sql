-- +goose Up
-- ingest_upload_view is ingest's read model of each upload: what the
-- pipeline's events said happened to it, folded in by ingest's own durable
-- consumers (blob_stored and completed events on UPLOADS, dead letters on
-- UPLOADS_DLQ). GET /v1/uploads reads it, never another service's tables.
-- Every column is merged so that an event applied twice, or after a later
-- one, leaves the row as it was: the first owner, subject and times win
-- (least), the latest progress and the dead letter of the highest UPLOADS_DLQ
-- sequence win.
CREATE TABLE ingest_upload_view (
    id             text        PRIMARY KEY,
    -- owner, subject, content_type, size and sha256 are the upload's, from
    -- the first event that carried them ('' and 0 until then).
    owner          text        NOT NULL DEFAULT '',
    subject        text        NOT NULL DEFAULT '',
    content_type   text        NOT NULL DEFAULT '',
    size           bigint      NOT NULL DEFAULT 0,
    sha256         text        NOT NULL DEFAULT '',
    -- event_time is the request's event time, which every event carries.
    event_time     timestamptz,
    -- seen_at is when ingest first heard of the upload: the listing's order.
    seen_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- stored_at: the first blob_stored event (stream time); completed_at:
    -- the first completed event, with the reference it recorded.
    stored_at      timestamptz,
    completed_at   timestamptz,
    ref            jsonb,
    -- progress_seq is the highest UPLOADS sequence of a blob_stored or
    -- completed event: a dead letter of an earlier message was overtaken (a
    -- re-drive).
    progress_seq   bigint,
    -- The latest dead letter of the upload's events: its UPLOADS_DLQ
    -- sequence, the UPLOADS sequence of the message it dead-lettered
    -- (Blobref-Dead-Sequence), reason, step and dead-letter time.
    dead_seq       bigint,
    dead_orig_seq  bigint,
    dead_reason    text,
    dead_step      text,
    dead_at        timestamptz
);

-- The listing of an owner's uploads that only the events know of.
CREATE INDEX ingest_upload_view_owner ON ingest_upload_view (owner, seen_at DESC, id DESC);

-- published_seq is the UPLOADS sequence of the latest request event ingest
-- published: a dead letter of an earlier message was overtaken (a retry
-- re-drove the upload). Sequences, not times, order the events: one stream,
-- one order, whatever the clocks of ingest, the steps and the servers.
ALTER TABLE ingest_uploads ADD COLUMN published_seq bigint;

-- The listing of a caller's uploads ingest accepted.
CREATE INDEX ingest_uploads_caller_created ON ingest_uploads (caller, created_at DESC, id DESC);

-- The uploads the pipeline finished before the read model existed, once:
-- the events of those older than the streams keep are gone, and the read
-- model's consumers replay the rest. Stored ones from blobwriter's markers,
-- completed ones from refwriter's references.
INSERT INTO ingest_upload_view (id, owner, subject, content_type, size, sha256, event_time,
    seen_at, stored_at)
SELECT m.upload_id, coalesce(u.caller, ''), coalesce(u.subject, ''), coalesce(m.result->>'contentType', ''),
    coalesce((m.result->>'size')::bigint, 0), m.fingerprint, NULL,
    coalesce(u.created_at, m.created_at), m.created_at
FROM step_markers m LEFT JOIN ingest_uploads u ON u.id = m.upload_id
WHERE m.step = 'blob'
ON CONFLICT (id) DO NOTHING;

INSERT INTO ingest_upload_view (id, owner, subject, content_type, size, sha256, event_time,
    seen_at, stored_at, completed_at, ref)
SELECT r.id, r.owner, r.subject, r.content_type, r.size, r.sha256, r.event_time,
    r.created_at, r.created_at, r.created_at,
    jsonb_build_object('id', r.id, 'owner', r.owner, 'subject', r.subject, 'eventTime', r.event_time,
        'blob', jsonb_build_object('key', r.blob_key, 'size', r.size, 'sha256', r.sha256, 'contentType', r.content_type))
FROM upload_refs r
ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, subject = excluded.subject,
    event_time = excluded.event_time, completed_at = excluded.completed_at, ref = excluded.ref;

-- +goose Down
DROP INDEX ingest_uploads_caller_created;
ALTER TABLE ingest_uploads DROP COLUMN published_seq;
DROP TABLE ingest_upload_view;
