package dbschema_test

import (
	"context"
	"io/fs"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"

	"github.com/blobref/blobref/internal/dbschema"
	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/step"
)

// openSchema returns a pool on a fresh, empty schema of the test's own.
func openSchema(t *testing.T, ctx context.Context) (*pgxpool.Pool, string) {
	t.Helper()
	schema, url := testenv.NewSchema(t, "mig_")
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool, schema
}

// before returns a fresh schema with the step tables and blobref's
// migrations up to, not including, version: its pool, the provider of
// blobref's migrations on it (to go up to version and down again), and an
// exec that fails the test.
func before(t *testing.T, ctx context.Context, version int64) (*pgxpool.Pool, *goose.Provider, func(sql string, args ...any)) {
	t.Helper()
	pool, _ := openSchema(t, ctx)
	db := stdlib.OpenDBFromPool(pool)
	t.Cleanup(func() { _ = db.Close() })
	p, err := goose.NewProvider(goose.DialectPostgres, db, dbschema.Migrations())
	if err != nil {
		t.Fatal(err)
	}
	if err := step.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := p.UpTo(ctx, version-1); err != nil {
		t.Fatal(err)
	}
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	return pool, p, exec
}

// layout describes the tables of schema: each column with its type,
// nullability and default, and each constraint with its definition.
func layout(t *testing.T, ctx context.Context, pool *pgxpool.Pool, schema string) map[string]string {
	t.Helper()
	out := map[string]string{}
	rows, err := pool.Query(ctx, `
		SELECT table_name || '.' || column_name, data_type || ' ' || is_nullable || ' ' || coalesce(column_default, '')
		FROM information_schema.columns
		WHERE table_schema = $1 AND table_name NOT IN ('goose_db_version', $2)
		UNION ALL
		SELECT cl.relname || ' ' || c.conname, pg_get_constraintdef(c.oid)
		FROM pg_constraint c JOIN pg_class cl ON cl.oid = c.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace
		WHERE n.nspname = $1 AND cl.relname NOT IN ('goose_db_version', $2)`, schema, step.VersionTable)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// A database migrated before the step tables had migrations of their own
// (testdata/before-step holds blobref's migrations as they were then, the
// step tables among them) upgrades cleanly: step.Migrate adopts the tables
// with their rows, blobref's migrations go on from where they were, and the
// schema ends as a fresh one does. Migrating again changes nothing.
func TestUpgradeFromTheSchemaBeforeTheStepTablesMoved(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	old, oldSchema := openSchema(t, ctx)
	db := stdlib.OpenDBFromPool(old)
	defer db.Close()
	before, err := goose.NewProvider(goose.DialectPostgres, db, os.DirFS("testdata/before-step"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := before.Up(ctx); err != nil {
		t.Fatalf("the schema before: %v", err)
	}
	if _, err := old.Exec(ctx, `
		INSERT INTO step_markers (upload_id, step, fingerprint, result) VALUES ('u1', 'blob', 'aa', '{"key":"uploads/u1"}');
		INSERT INTO excused_deliveries (step, stream, seq, excused) VALUES ('blob', 'UPLOADS', 7, 2)`); err != nil {
		t.Fatal(err)
	}

	for range 2 {
		if err := dbschema.Migrate(ctx, old); err != nil {
			t.Fatalf("migrate the old schema: %v", err)
		}
	}
	pg := testenv.Postgres{Pool: old}
	if n := pg.Count(t, `SELECT count(*) FROM step_markers WHERE upload_id = 'u1' AND result->>'key' = 'uploads/u1'`); n != 1 {
		t.Errorf("markers after the upgrade: got %d of u1's, want 1", n)
	}
	if n := pg.Count(t, `SELECT excused FROM excused_deliveries WHERE seq = 7`); n != 2 {
		t.Errorf("excused deliveries after the upgrade: got %d, want 2", n)
	}
	stepVersions := pg.Map(t, `SELECT version_id::text, is_applied::text FROM `+step.VersionTable+` WHERE version_id > 0`)
	stepFiles, err := fs.Glob(step.Migrations(), "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, f := range stepFiles { // 00001_step_markers.sql: version 1
		v, _, _ := strings.Cut(f, "_")
		want[strings.TrimLeft(v, "0")] = "true"
	}
	if len(want) < 2 || !maps.Equal(stepVersions, want) {
		t.Errorf("step migrations recorded: got %v, want %v (one per file, applied)", stepVersions, want)
	}
	files, err := fs.Glob(dbschema.Migrations(), "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if n := pg.Count(t, `SELECT count(DISTINCT version_id) FROM goose_db_version WHERE version_id > 0`); n != len(files) {
		t.Errorf("blobref migrations recorded: got %d, want %d (one per file)", n, len(files))
	}

	fresh, freshSchema := openSchema(t, ctx)
	if err := dbschema.Migrate(ctx, fresh); err != nil {
		t.Fatalf("migrate a fresh schema: %v", err)
	}
	got, want := layout(t, ctx, old, oldSchema), layout(t, ctx, fresh, freshSchema)
	if !maps.Equal(got, want) {
		t.Errorf("upgraded schema differs from a fresh one:\n got %v\nwant %v", got, want)
	}
	if _, ok := want["step_markers.upload_id"]; !ok {
		t.Errorf("a fresh schema has no step_markers: %v", want)
	}
}

// step.Migrate alone gives a service of another team the step tables, and
// nothing of blobref's.
func TestStepMigrateCreatesOnlyTheStepTables(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, schema := openSchema(t, ctx)
	if err := step.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	pg := testenv.Postgres{Pool: pool}
	tables := pg.Map(t, `SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = $1`, schema)
	want := map[string]string{"step_markers": "BASE TABLE", "excused_deliveries": "BASE TABLE", step.VersionTable: "BASE TABLE"}
	if !maps.Equal(tables, want) {
		t.Errorf("tables: got %v, want %v", tables, want)
	}
}
