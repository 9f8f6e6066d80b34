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
// A schema that already holds the tables (one migrated before they had
// migrations of their own) keeps them as they are.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	if err := MigrateFS(ctx, pool, Migrations(), VersionTable); err != nil {
		return fmt.Errorf("step: %w", err)
	}
	return nil
}

// MigrateFS applies the goose migrations of fsys (SQL files named
// <version>_<name>.sql) that versionTable does not record yet, in the schema
// named first in the connection's search_path. A step with tables of its
// own migrates them with it, after Migrate, under a version table of its
// own. It is safe to call from many processes at once: they wait for each
// other under an advisory lock of the version table's and the schema's, so
// migrating one schema never waits for another.
func MigrateFS(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, versionTable string) error {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	var lockID int64
	err := pool.QueryRow(ctx, `SELECT hashtextextended('blobref-migrate:' || $1 || ':' || current_schema(), 0)`, versionTable).Scan(&lockID)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", versionTable, err)
	}
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockID), lock.WithLockTimeout(1, 300))
	if err != nil {
		return fmt.Errorf("migrate %s: %w", versionTable, err)
	}
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithSessionLocker(locker), goose.WithTableName(versionTable), goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrate %s: %w", versionTable, err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate %s: %w", versionTable, err)
	}
	return nil
}
