-- +goose Up
-- step_markers records that one step of one upload finished: check, then do,
-- then record. The row is written once (INSERT ... ON CONFLICT DO NOTHING);
-- whoever inserts it won, everyone else re-emits its result. IF NOT EXISTS:
-- a database whose schema already holds it (blobref's) adopts it as it is.
CREATE TABLE IF NOT EXISTS step_markers (
    upload_id   text        NOT NULL,
    step        text        NOT NULL,
    fingerprint text        NOT NULL,
    result      jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (upload_id, step)
);

-- +goose Down
DROP TABLE step_markers;
