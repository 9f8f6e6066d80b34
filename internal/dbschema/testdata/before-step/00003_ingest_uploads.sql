-- +goose Up
-- ingest_uploads is ingest's record of each upload it accepted over HTTP: who
-- sent it under which Idempotency-Key, the request's fingerprint (subject,
-- content type, size, sha256) that a retry with the same key must match, where
-- the bytes were claim-checked, and when the request event was last published.
-- id is derived from (caller, idempotency_key), so the two keys agree.
CREATE TABLE ingest_uploads (
    id              text        PRIMARY KEY,
    caller          text        NOT NULL,
    idempotency_key text        NOT NULL,
    subject         text        NOT NULL,
    content_type    text        NOT NULL,
    size            bigint      NOT NULL CHECK (size >= 0),
    sha256          text        NOT NULL,
    -- dataref is nats-object://<bucket>/<id> when the bytes were staged; NULL
    -- when they travel inline (a retry re-sends them).
    dataref         text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- published_at is when JetStream last acknowledged the request event; NULL
    -- until the first publish succeeds.
    published_at    timestamptz,
    publish_count   integer     NOT NULL DEFAULT 0 CHECK (publish_count >= 0),
    UNIQUE (caller, idempotency_key)
);

-- +goose Down
DROP TABLE ingest_uploads;
