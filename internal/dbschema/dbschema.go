// Package dbschema holds blobref's Postgres schema as versioned migrations
// embedded in every binary, and applies them at start-up: first the step
// runtime's tables (step.Migrate: step_markers, excused_deliveries), then
// blobref's own (upload_refs, subject_refs, ingest's tables).
//
// Migrations are applied with goose under a Postgres advisory lock of the
// schema's own, so many replicas starting at once migrate exactly once. The
// schema is the one named first in the connection's search_path, which lets
// tests give each test its own schema.
package dbschema

import (
	"context"
	"embed"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/pressly/goose/v3"

	"github.com/blobref/blobref/pkg/step"
)

//go:embed migrations/*.sql
var embedded embed.FS

// Migrations returns the embedded migration files.
func Migrations() fs.FS {
	sub, err := fs.Sub(embedded, "migrations")
	if err != nil {
		panic(err) // the embed pattern above guarantees the directory
	}
	return sub
}

// Migrate applies every pending migration: the step tables', then
// blobref's (recorded in goose's default version table). It is safe to call
// from many processes at once.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	if err := step.Migrate(ctx, pool); err != nil {
		return fmt.Errorf("dbschema: %w", err)
	}
	if err := step.MigrateFS(ctx, pool, Migrations(), goose.DefaultTablename); err != nil {
		return fmt.Errorf("dbschema: %w", err)
	}
	return nil
}
