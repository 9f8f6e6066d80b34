-- +goose Up
-- An inline upload's payload (at most INLINE_THRESHOLD) is written with its
-- record and cleared by the update that records its publish. Kept in the row
-- (toast_tuple_target at its maximum) rather than in TOAST chunks, and with
-- room left on each page (fillfactor) so that the clearing update is a
-- heap-only update: one page written per upload instead of the row, its
-- TOAST chunks and their index entries.
ALTER TABLE ingest_uploads SET (toast_tuple_target = 8160, fillfactor = 70);

-- +goose Down
ALTER TABLE ingest_uploads RESET (toast_tuple_target, fillfactor);
