package step

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"
)

//go:embed migrations/*.sql
var migrations embed.FS

// VersionTable is the table in which Migrate records the step tables'
// migrations, apart from a service's own (goose's goose_db_version).
const VersionTable = "step_schema_version"

// Migrations returns the migrations of the step tables: step_markers (the
// markers) and excused_deliveries (the deliveries an outage excused).
func Migrations() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embed pattern above guarantees the directory
	}
	return sub
}

// Migrate creates or upgrades the step tables in the schema named first in
// the connection's search_path, recording what it applied in VersionTable.
// It is safe to call from many processes at once: they wait for each other
// under an advisory lock of the schema's own. A schema that already holds
// the tables (one migrated before they had migrations of their own) keeps
// them as they are.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	var lockID int64
	err := pool.QueryRow(ctx, `SELECT hashtextextended('blobref-step-migrate:' || current_schema(), 0)`).Scan(&lockID)
	if err != nil {
		return fmt.Errorf("step: migrate: %w", err)
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID), lock.WithLockTimeout(1, 300))
	if err != nil {
		return fmt.Errorf("step: migrate: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, Migrations(),
		goose.WithSessionLocker(locker), goose.WithTableName(VersionTable), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("step: migrate: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("step: migrate: %w", err)
	}
	return nil
}
