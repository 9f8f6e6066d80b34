-- +goose Up
-- excused_deliveries counts, per step and stream message, the deliveries
-- that failed because a dependency was down or full. A message is
-- dead-lettered after MaxDeliveries deliveries that were not excused, so an
-- outage delays work without using up its retries. The runner writes a row
-- only for a message an outage touched, and reads it only when the message
-- reaches its delivery limit. IF NOT EXISTS: as step_markers.
CREATE TABLE IF NOT EXISTS excused_deliveries (
    step       text        NOT NULL,
    stream     text        NOT NULL,
    seq        bigint      NOT NULL CHECK (seq > 0),
    excused    integer     NOT NULL CHECK (excused > 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (step, stream, seq)
);

-- +goose Down
DROP TABLE excused_deliveries;
