-- +goose Up
-- One row per (upload, endpoint) the notifier is done with: the marker of
-- one endpoint's delivery. The step's own marker (step_markers, step
-- "notify") says the whole upload is done.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    upload_id    text        NOT NULL,
    endpoint_id  text        NOT NULL,
    webhook_id   text        NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('delivered', 'gone')),
    status       integer     NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (upload_id, endpoint_id)
);

-- +goose Down
DROP TABLE IF EXISTS webhook_deliveries;
