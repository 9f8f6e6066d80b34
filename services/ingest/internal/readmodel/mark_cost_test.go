package readmodel

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/pkg/events"
)

// cost is what a statement cost Postgres, from EXPLAIN (ANALYZE, WAL,
// TIMING OFF: no clock reads per node, which would weigh on the longer plan).
type cost struct {
	WALRecords, WALBytes int64
	Time                 time.Duration
}

func (c *cost) add(o cost) {
	c.WALRecords, c.WALBytes, c.Time = c.WALRecords+o.WALRecords, c.WALBytes+o.WALBytes, c.Time+o.Time
}

func explainCost(t *testing.T, pg *testenv.Postgres, sql string, args ...any) cost {
	t.Helper()
	var raw []byte
	if err := pg.Pool.QueryRow(context.Background(), "EXPLAIN (ANALYZE, WAL, TIMING OFF, FORMAT JSON) "+sql, args...).Scan(&raw); err != nil {
		t.Fatalf("explain: %v", err)
	}
	var out []struct {
		Plan struct {
			Records int64 `json:"WAL Records"`
			Bytes   int64 `json:"WAL Bytes"`
		} `json:"Plan"`
		Time float64 `json:"Execution Time"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || len(out) != 1 {
		t.Fatalf("explain: %s: %v", raw, err)
	}
	return cost{out[0].Plan.Records, out[0].Plan.Bytes, time.Duration(out[0].Time * float64(time.Millisecond))}
}

// TestCompletionMarkCost measures what taking an upload off ingest's list
// of incomplete uploads adds to the read model's statement, per upload: the
// statement with the mark against the one without, on uploads ingest
// recorded, listed and published, interleaved. The figures are logged
// (docs/ingest-completer.md). What must hold: the first completion takes
// the upload off (more WAL than upsert alone), no statement writes ingest's
// record (its version, xmin, unchanged), and a redelivered completion
// leaves the read model's row as it was.
func TestCompletionMarkCost(t *testing.T) {
	t.Parallel()
	const n = 64
	pg := testenv.StartPostgres(t)
	at := time.Now().UTC()
	facts := func(id string) (stored, completed Fact) {
		t.Helper()
		recordListed(t, pg.Pool, []string{id})
		ev := completedEvent(id, at)
		return Stored(ev, at, 2), Completed(ev, at, 3)
	}
	var costs [2][3]cost // [before, with the mark][stored, completed, redelivered]
	for i := range n + 8 {
		for s := range 2 {
			id := fmt.Sprintf("cost-%d-%d", s, i)
			stored, completed := facts(id)
			var c [3]cost
			var xmin [4]string
			var views [3]string // the read model's row's versions
			xmin[0] = version(t, pg, id)
			for k, f := range []Fact{stored, completed, completed} {
				args, err := factArgs([]Fact{f})
				if err != nil {
					t.Fatal(err)
				}
				c[k] = explainCost(t, pg, upsertStatement(s == 1), args...)
				xmin[k+1] = version(t, pg, id)
				if k == 2 && viewVersion(t, pg, id) != views[1] {
					t.Errorf("%s: a redelivered completion wrote the read model's row again", id)
				}
				views[k] = viewVersion(t, pg, id)
			}
			// The record is never written; the upload leaves the list of
			// incomplete ones with the statement with the mark only.
			if xmin[1] != xmin[0] || xmin[2] != xmin[0] || xmin[3] != xmin[0] {
				t.Errorf("%s: versions of the record after blob_stored, completed and a redelivery: %v", id, xmin)
			}
			if listed := pg.Count(t, `SELECT count(*) FROM ingest_incomplete WHERE id = $1`, id); (listed == 0) != (s == 1) {
				t.Errorf("%s: listed incomplete %d times after its completion, the statement with the mark: %v", id, listed, s == 1)
			}
			if i < 8 { // warm-up: the tables' first pages
				continue
			}
			for k := range c {
				costs[s][k].add(c[k])
			}
		}
	}
	per := func(c cost) string {
		return fmt.Sprintf("%3d B WAL in %.2f records, %6.1f µs", c.WALBytes/n, float64(c.WALRecords)/n,
			float64(c.Time.Microseconds())/n)
	}
	names := []string{"blob_stored", "completed", "redelivered completed"}
	for k, name := range names {
		t.Logf("per upload, %-22s before: %s; with the mark: %s", name, per(costs[0][k]), per(costs[1][k]))
	}
	if costs[1][1].WALBytes <= costs[0][1].WALBytes {
		t.Errorf("completed: the statement wrote %d bytes of WAL, upsert alone %d: the mark wrote nothing",
			costs[1][1].WALBytes, costs[0][1].WALBytes)
	}
	if n := pg.Count(t, `SELECT count(*) FROM ingest_incomplete WHERE id LIKE 'cost-1-%'`); n != 0 {
		t.Errorf("uploads completed with the mark: %d still listed incomplete", n)
	}
}

// recordListed records uploads ids as ingest leaves them once it has
// published their requests: a record each, and each on the list of
// incomplete uploads.
func recordListed(tb testing.TB, db Execer, ids []string) {
	tb.Helper()
	ctx := context.Background()
	if _, err := db.Exec(ctx, `INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type,
			size, sha256, published_at, published_seq, publish_count)
		SELECT id, 'alice', id, 'users/1/' || id, 'text/plain', 1, 'aa', now(), n, 1
		FROM unnest($1::text[]) WITH ORDINALITY AS v(id, n)`, ids); err != nil {
		tb.Fatal(err)
	}
	if _, err := db.Exec(ctx, `INSERT INTO ingest_incomplete (id) SELECT unnest($1::text[])`, ids); err != nil {
		tb.Fatal(err)
	}
}

// completedEvent is upload id's completed event (one of recordListed's
// uploads) at at.
func completedEvent(id string, at time.Time) *events.Event {
	blob := events.Blob{Key: events.DefaultKeyPrefix + id, Size: 1, SHA256: "aa", ContentType: "text/plain"}
	return &events.Event{ID: id, Owner: "alice", Subject: "users/1/" + id, SHA256: "aa", Time: at, Blob: &blob,
		Ref: &events.Reference{ID: id, Owner: "alice", Subject: "users/1/" + id, Blob: blob, EventTime: at}}
}

// viewVersion is the xmin of upload id's row in the read model.
func viewVersion(t *testing.T, pg *testenv.Postgres, id string) string {
	t.Helper()
	return pg.Map(t, `SELECT 'v', xmin::text FROM ingest_upload_view WHERE id = $1`, id)["v"]
}

// version is the xmin of upload id's record: it changes when a statement
// writes the row.
func version(t *testing.T, pg *testenv.Postgres, id string) string {
	t.Helper()
	return pg.Map(t, `SELECT 'v', xmin::text FROM ingest_uploads WHERE id = $1`, id)["v"]
}

// The statement with the mark reads the list of incomplete uploads once,
// whatever the plan believes of its size: the list is small and churns, so
// the statistics a generic plan is made from can say it is empty while it
// holds thousands (stalled and dead-lettered uploads), and a join planned
// on that rescanned the batch once per listed upload. Here the list is
// analyzed empty after a churn, then holds 2,000 uploads, and a batch of 64 completions
// runs through the generic plan the services use.
func TestCompletionMarkReadsTheListOnce(t *testing.T) {
	t.Parallel()
	const listed, batch = 2000, 64
	pg := testenv.StartPostgres(t)
	ctx := context.Background()
	conn, err := pg.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// Analyzed empty after a churn (a quiet moment), so the statistics
	// put no rows on the pages the table has.
	exec(`INSERT INTO ingest_incomplete (id) SELECT 'gone' || i FROM generate_series(1, $1::int) i`, listed)
	exec(`DELETE FROM ingest_incomplete`)
	exec(`ANALYZE ingest_incomplete`)
	ids := make([]string, listed)
	for i := range ids {
		ids[i] = fmt.Sprintf("l%d", i)
	}
	recordListed(t, conn, ids)
	exec(`SET plan_cache_mode = force_generic_plan`)
	at := time.Now().UTC()
	facts := make([]Fact, batch)
	for i := range facts {
		facts[i] = Completed(completedEvent(ids[i*(listed/batch)], at), at, uint64(i+1))
	}
	args, err := factArgs(facts)
	if err != nil {
		t.Fatal(err)
	}
	// A prepared statement under force_generic_plan, as the services' pool
	// runs it (EXPLAIN of the statement itself plans it for its arguments),
	// executed with the arguments as literals: EXECUTE takes no parameters
	// of an outer statement.
	exec(`PREPARE marked AS ` + upsert)
	var types []string
	if err := conn.QueryRow(ctx, `SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = 'marked'`).Scan(&types); err != nil {
		t.Fatal(err)
	}
	literals := make([]string, len(args))
	for i, arg := range args {
		if err := conn.QueryRow(ctx, `SELECT quote_nullable($1::`+types[i]+`::text)`, arg).Scan(&literals[i]); err != nil {
			t.Fatalf("argument %d: %v", i+1, err)
		}
	}
	var raw []byte
	if err := conn.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE marked("+strings.Join(literals, ", ")+")").Scan(&raw); err != nil {
		t.Fatalf("explain: %v", err)
	}
	var out []struct {
		Plan map[string]any `json:"Plan"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || len(out) != 1 {
		t.Fatalf("explain: %s: %v", raw, err)
	}
	// Every row a node looked at: returned, or removed by a filter or a
	// join filter, over all its loops.
	var looked float64
	var walk func(node map[string]any)
	walk = func(node map[string]any) {
		loops, _ := node["Actual Loops"].(float64)
		for _, k := range []string{"Actual Rows", "Rows Removed by Filter", "Rows Removed by Join Filter"} {
			n, _ := node[k].(float64)
			looked += n * loops
		}
		children, _ := node["Plans"].([]any)
		for _, c := range children {
			walk(c.(map[string]any))
		}
	}
	walk(out[0].Plan)
	t.Logf("%d completions against %d listed uploads: the plan's nodes looked at %.0f rows", batch, listed, looked)
	if limit := float64(8 * (listed + batch)); looked > limit {
		t.Errorf("the plan's nodes looked at %.0f rows, want at most %.0f (the list a few times, not once per batch row):\n%s",
			looked, limit, raw)
	}
	if n := pg.Count(t, `SELECT count(*) FROM ingest_incomplete`); n != listed-batch {
		t.Errorf("listed after the batch: %d, want %d", n, listed-batch)
	}
}
