-- +goose Up
-- The step tables (step_markers, here once, and excused_deliveries) are the
-- step runtime's: package step's migrations create them, and Migrate applies
-- those first. This version and 20 stay taken, so that no other migration
-- gets a number a database may have applied already.
SELECT 1;

-- +goose Down
SELECT 1;
