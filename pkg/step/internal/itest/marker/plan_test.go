package marker_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/step/internal/marker"
)

// The statements that look markers up by upload id read each one by
// primary key, even under a plan Postgres made while the table was small
// and kept while it grew: a generic plan stands until the table is
// analyzed again, and autovacuum analyzes at most once a minute. Planned
// as a join, a claim planned on a small table hashed every marker of the
// step, each time, until then. Autovacuum first analyzes the table after
// 1,000 changes (migration 00003): on fewer rows than that, Postgres would
// plan to scan the table for each id.
func TestLookUpsByIDUseThePrimaryKey(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	ctx := context.Background()
	conn, err := pg.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Hijack().Close(ctx) }() // its session settings and statements go with it
	exec := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	insert := func(from, to int) {
		exec(fmt.Sprintf(`INSERT INTO step_markers (upload_id, step, fingerprint, result)
			SELECT 'u' || i, 'blob', 'aa', '{}' FROM generate_series(%d, %d) i`, from, to))
	}
	plans := func() []string {
		t.Helper()
		out := make([]string, len(marker.ByID))
		for i := range marker.ByID {
			rows, err := conn.Query(ctx, fmt.Sprintf(`EXPLAIN EXECUTE lookup%d('blob', ARRAY['u1', 'u2', 'u3'])`, i), pgx.QueryExecModeSimpleProtocol)
			if err != nil {
				t.Fatal(err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			out[i] = strings.Join(lines, "\n")
		}
		return out
	}
	var opts []string
	if err := conn.QueryRow(ctx, `SELECT reloptions FROM pg_class WHERE oid = 'step_markers'::regclass`).Scan(&opts); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(opts, "autovacuum_analyze_threshold=1000") {
		t.Fatalf("step_markers: reloptions %q, want autovacuum_analyze_threshold=1000", opts)
	}
	exec(`ALTER TABLE step_markers SET (autovacuum_enabled = false)`) // no ANALYZE but ours
	insert(1, 1000)
	exec(`ANALYZE step_markers`)
	exec(`SET plan_cache_mode = force_generic_plan`)
	for i, sql := range marker.ByID {
		exec(fmt.Sprintf(`PREPARE lookup%d(text, text[]) AS %s`, i, sql))
	}
	plans() // made now, on 1,000 markers
	insert(1001, 50000)
	for i, plan := range plans() {
		if strings.Contains(plan, "Seq Scan on step_markers") || !strings.Contains(plan, "step_markers_pkey") {
			t.Errorf("statement %d on 50,000 markers, planned on 1,000: does not read by primary key:\n%s", i, plan)
		}
	}
}
