-- +goose Up
-- payload is the outbox of an inline upload: its bytes, written with the
-- record and cleared when the request's publish is recorded, so that JetStream
-- can be given the request again from Postgres alone. NULL for a staged upload
-- (the staging bucket holds its bytes) and once published.
ALTER TABLE ingest_uploads ADD COLUMN payload bytea;

-- claimed_until: the request that recorded the upload is publishing it until
-- then; a request with the same key meanwhile is answered 409. Set by the
-- insert, cleared when the publish is recorded or has failed; a claim whose
-- ingest died lapses on its own.
ALTER TABLE ingest_uploads ADD COLUMN claimed_until timestamptz;

-- ingest_leases holds the key of a large upload while its body streams into
-- the staging bucket, before it can be recorded (its sha256 is not known yet).
-- The holder renews expires_at while the body streams, and the insert of the
-- record deletes the lease; a lease whose ingest died expires, and the next
-- request with the key takes it over.
CREATE TABLE ingest_leases (
    id         text        PRIMARY KEY,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE ingest_leases;
ALTER TABLE ingest_uploads DROP COLUMN claimed_until;
ALTER TABLE ingest_uploads DROP COLUMN payload;
