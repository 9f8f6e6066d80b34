-- +goose Up
-- upload_refs holds one reference per upload id; it is written in the same
-- transaction as the "ref" step marker.
CREATE TABLE upload_refs (
    id           text        PRIMARY KEY,
    subject      text        NOT NULL,
    blob_key     text        NOT NULL,
    size         bigint      NOT NULL CHECK (size >= 0),
    sha256       text        NOT NULL,
    content_type text        NOT NULL,
    event_time   timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX upload_refs_subject_idx ON upload_refs (subject, event_time DESC);

-- subject_refs points each subject at its current reference. It only moves
-- forward in event time (ties broken by upload id), so replaying an old event
-- never moves it back.
CREATE TABLE subject_refs (
    subject    text        PRIMARY KEY,
    upload_id  text        NOT NULL REFERENCES upload_refs (id),
    event_time timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- +goose Down
DROP TABLE subject_refs;
DROP TABLE upload_refs;
