-- +goose Up
-- excused_deliveries is the step runtime's table: see 00001_markers.sql.
SELECT 1;

-- +goose Down
SELECT 1;
