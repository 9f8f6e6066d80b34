package webhook

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/blobref/blobref/pkg/step"
)

//go:embed migrations/*.sql
var migrations embed.FS

// VersionTable records the notifier's migrations, apart from the step
// tables' and blobref's own.
const VersionTable = "notifier_schema_version"

// Migrate creates the step tables (step.Migrate) and the notifier's
// webhook_deliveries in the schema named first in the search_path; many
// processes may run it at once.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	if err := step.Migrate(ctx, pool); err != nil {
		return err
	}
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return err
	}
	if err := step.MigrateFS(ctx, pool, sub, VersionTable); err != nil {
		return fmt.Errorf("notifier: %w", err)
	}
	return nil
}

// Outcomes of an endpoint's delivery, as its marker records them.
const (
	// OutcomeDelivered: the endpoint answered 2xx.
	OutcomeDelivered = "delivered"
	// OutcomeGone: the endpoint answered 410 Gone: it wants no more, and
	// this upload is not sent to it again.
	OutcomeGone = "gone"
)

// store keeps the per-endpoint markers.
type store struct{ pool *pgxpool.Pool }

// done returns the outcome recorded for each endpoint of upload that has one.
func (s store) done(ctx context.Context, upload string) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT endpoint_id, outcome FROM webhook_deliveries WHERE upload_id = $1`, upload)
	if err != nil {
		return nil, fmt.Errorf("webhook deliveries of %s: %w", upload, err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var ep, outcome string
		if err := rows.Scan(&ep, &outcome); err != nil {
			return nil, fmt.Errorf("webhook deliveries of %s: %w", upload, err)
		}
		out[ep] = outcome
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("webhook deliveries of %s: %w", upload, err)
	}
	return out, nil
}

// record records the outcome of upload's delivery to endpoint; a marker
// already there stays as it is.
func (s store) record(ctx context.Context, upload, endpoint, webhookID, outcome string, status int) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO webhook_deliveries (upload_id, endpoint_id, webhook_id, outcome, status)
VALUES ($1, $2, $3, $4, $5) ON CONFLICT (upload_id, endpoint_id) DO NOTHING`, upload, endpoint, webhookID, outcome, status)
	if err != nil {
		return fmt.Errorf("record webhook delivery of %s to %s: %w", upload, endpoint, err)
	}
	return nil
}
