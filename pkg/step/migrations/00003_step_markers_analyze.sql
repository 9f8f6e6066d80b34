-- +goose Up
-- The runner looks up each upload's marker by primary key (marker's
-- claimSQL and selectMarkers). Postgres keeps a statement's generic plan
-- until the table is analyzed again, and autovacuum analyzes at most once
-- a minute: a plan made when the table held a few dozen rows (autovacuum's
-- first ANALYZE, after 50) reads the whole table for each upload for as
-- long as it stands, however much the table grew meanwhile. Analyzed first
-- after 1,000 changes, the table is never seen that small, and a look-up by
-- primary key is always planned as one.
ALTER TABLE step_markers SET (autovacuum_analyze_threshold = 1000, autovacuum_vacuum_insert_threshold = 1000);

-- +goose Down
ALTER TABLE step_markers RESET (autovacuum_analyze_threshold, autovacuum_vacuum_insert_threshold);
