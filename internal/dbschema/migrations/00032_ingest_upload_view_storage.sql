-- +goose Up
-- A row of the read model is written when ingest first hears of an upload
-- and updated by the events that follow (stored, completed). None of those
-- changes an indexed column, so with room left on each page (fillfactor)
-- the updates are heap-only: one page written, no new index entries.
ALTER TABLE ingest_upload_view SET (fillfactor = 70);

-- +goose Down
ALTER TABLE ingest_upload_view RESET (fillfactor);
