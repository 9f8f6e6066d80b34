package uploads

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/blobref/blobref/internal/testenv"
)

// completedUploads is how many completed uploads the scan test keeps in
// ingest_uploads: BLOBREF_COMPLETER_SCAN_UPLOADS, e.g. 200000 for the figures
// of docs/ingest-completer.md; a few thousand in the normal suite.
func completedUploads(t *testing.T) int {
	s := os.Getenv("BLOBREF_COMPLETER_SCAN_UPLOADS")
	if s == "" {
		return 5000
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("BLOBREF_COMPLETER_SCAN_UPLOADS=%q: want a positive count", s)
	}
	return n
}

// fillUploads writes n uploads that the read model says completed, as ingest
// and its read model leave them (published once, the completion recorded),
// a dead-lettered one and the unfinished ones the completer is for: unpublished
// with a lapsed claim, stalled, and pending within the horizon. It returns
// how many are not completed.
func fillUploads(t *testing.T, pg *testenv.Postgres, n int, horizon time.Duration) (unfinished int) {
	t.Helper()
	ctx := context.Background()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pg.Pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	old := time.Now().Add(-2 * horizon)
	// The completed ones: the record as the publish left it, then the read
	// model's rows through its own statement (readmodel.Apply).
	exec(`INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type, size, sha256,
			created_at, published_at, published_seq, publish_count)
		SELECT 'done-' || i, 'alice', 'done-' || i, 'users/42/done-' || i, 'text/plain', 1, 'aa',
			$2::timestamptz, $2::timestamptz, i, 1
		FROM generate_series(1, $1::int) i`, n, old)
	exec(`INSERT INTO ingest_incomplete (id) SELECT 'done-' || i FROM generate_series(1, $1::int) i`, n)
	exec(`INSERT INTO ingest_upload_view AS v (id, owner, subject, content_type, size, sha256, event_time,
			stored_at, completed_at, progress_seq, ref)
		SELECT 'done-' || i, 'alice', 'users/42/done-' || i, 'text/plain', 1, 'aa', $2::timestamptz,
			$2::timestamptz, $2::timestamptz, i, jsonb_build_object('subject', 'users/42/done-' || i)
		FROM generate_series(1, $1::int) i`, n, old)
	// The read model's statement takes the uploads it completes off the
	// list of incomplete ones; these rows were written around it, and the
	// completer's statement takes them off.
	exec(markCompleted)
	// The unfinished ones: 3 never published (claims lapsed), 3 stalled, 3
	// pending within the horizon, and a dead-lettered one (the completer
	// still looks at it once per horizon).
	exec(`INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type, size, sha256,
			dataref, created_at, published_at, published_seq, publish_count, claimed_until)
		SELECT k || '-' || i, 'alice', k || '-' || i, 'users/42/' || k || '-' || i, 'text/plain', 1, 'aa',
			'nats-object://uploads-staging/' || k || '-' || i, $1::timestamptz,
			CASE k WHEN 'unpublished' THEN NULL WHEN 'pending' THEN now() ELSE $1::timestamptz END,
			CASE k WHEN 'unpublished' THEN NULL ELSE $2::int + i END,
			CASE k WHEN 'unpublished' THEN 0 ELSE 1 END,
			CASE k WHEN 'unpublished' THEN now() - interval '1 second' END
		FROM unnest(ARRAY['unpublished', 'stalled', 'pending', 'dead']) k, generate_series(1, 3) i
		WHERE k <> 'dead' OR i = 1`, old, n)
	exec(`INSERT INTO ingest_incomplete (id) SELECT id FROM ingest_uploads WHERE id NOT LIKE 'done-%'`)
	exec(`INSERT INTO ingest_upload_view (id, owner, subject, dead_seq, dead_orig_seq, dead_reason, dead_step, dead_at)
		VALUES ('dead-1', 'alice', 'users/42/dead-1', 1, $1::int + 1, 'invalid', 'blob', now())`, n)
	exec(`ANALYZE ingest_uploads`)
	exec(`ANALYZE ingest_upload_view`)
	exec(`ANALYZE ingest_incomplete`)
	return 10
}

// explain runs EXPLAIN (ANALYZE, BUFFERS) of sql in a transaction it rolls
// back (the statement claims what it finds), and returns the plan as text and
// as JSON.
func explain(t *testing.T, pg *testenv.Postgres, sql string, args ...any) (text string, plan map[string]any) {
	t.Helper()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, pg.Pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS) `+sql, args...)
		if err != nil {
			return err
		}
		lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return err
		}
		text = strings.Join(lines, "\n")
		var raw []byte
		if err := tx.QueryRow(ctx, `EXPLAIN (ANALYZE, FORMAT JSON) `+sql, args...).Scan(&raw); err != nil {
			return err
		}
		var plans []map[string]any
		if err := json.Unmarshal(raw, &plans); err != nil {
			return err
		}
		plan = plans[0]["Plan"].(map[string]any)
		return errRollback
	})
	if err != errRollback {
		t.Fatalf("explain: %v", err)
	}
	return text, plan
}

var errRollback = &rollback{}

type rollback struct{}

func (*rollback) Error() string { return "rolled back" }

// rowsRead is how many rows of relation the plan's nodes read: those they
// returned and those their filters removed, over all their loops.
func rowsRead(node map[string]any, relation string) (n float64, scans []string) {
	if node["Relation Name"] == relation {
		loops, _ := node["Actual Loops"].(float64)
		rows, _ := node["Actual Rows"].(float64)
		removed, _ := node["Rows Removed by Filter"].(float64)
		rechecked, _ := node["Rows Removed by Index Recheck"].(float64)
		n += (rows + removed + rechecked) * loops
		scan, _ := node["Node Type"].(string)
		if idx, ok := node["Index Name"].(string); ok {
			scan += " using " + idx
		}
		scans = append(scans, scan)
	}
	children, _ := node["Plans"].([]any)
	for _, c := range children {
		m, n2 := rowsRead(c.(map[string]any), relation)
		n += m
		scans = append(scans, n2...)
	}
	return n, scans
}

// A completer round reads the uploads that are not completed, not every
// upload ingest still keeps: with thousands completed and ten not, the claim
// reads the list of incomplete uploads and the records of the ones on it,
// and claims the due ones among them only (the dead-lettered one included,
// as before: the completer defers it by the horizon itself).
func TestCompleterClaimReadsOnlyUnfinishedUploads(t *testing.T) {
	t.Parallel()
	e := newCompleterEnv(t)
	n := completedUploads(t)
	unfinished := fillUploads(t, e.pg, n, completerHorizon)

	// Right after the completed ones left the list (its index still holds
	// their entries), then once vacuum has been by.
	for _, when := range []string{"after the marks", "after VACUUM"} {
		if when == "after VACUUM" {
			if _, err := e.pg.Pool.Exec(context.Background(), `VACUUM ANALYZE ingest_uploads, ingest_incomplete`); err != nil {
				t.Fatal(err)
			}
		}
		cutoff := time.Now().Add(-completerHorizon)
		text, plan := explain(t, e.pg, claimDue, cutoff, completerPage, e.c.claimTTL().Microseconds())
		t.Logf("%d completed and %d unfinished uploads, %s; EXPLAIN (ANALYZE, BUFFERS) of claimDue:\n%s", n, unfinished, when, text)
		read, scans := rowsRead(plan, "ingest_uploads")
		t.Logf("rows of ingest_uploads read: %v, by %v", read, scans)
		// Every due upload is read twice (found, claimed) and once more to
		// return it; the others once.
		if read > float64(3*unfinished) {
			t.Errorf("%s: the claim read %v rows of ingest_uploads (%v), want at most %d: the %d not completed, not the %d completed",
				when, read, scans, 3*unfinished, unfinished, n)
		}
		if read, scans := rowsRead(plan, "ingest_incomplete"); read > float64(unfinished) {
			t.Errorf("%s: the claim read %v rows of ingest_incomplete (%v), want at most the %d not completed:\n%s",
				when, read, scans, unfinished, text)
		}
		// The round's markCompleted reads the same.
		text, plan = explain(t, e.pg, markCompleted)
		for _, rel := range []string{"ingest_incomplete", "ingest_upload_view"} {
			if read, scans := rowsRead(plan, rel); read > float64(2*unfinished) {
				t.Errorf("%s: markCompleted read %v rows of %s (%v), want at most twice the %d not completed:\n%s",
					when, read, rel, scans, unfinished, text)
			}
		}
	}

	// The round itself: the due ones (3 unpublished, 3 stalled, the dead
	// one) are claimed, no completed one is.
	claimed := e.pg.Map(t, `SELECT id, '' FROM ingest_uploads WHERE claimed_until > now()`)
	page, err := e.c.claim(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range page {
		ids = append(ids, c.snap.ID)
		if strings.HasPrefix(c.snap.ID, "done-") || strings.HasPrefix(c.snap.ID, "pending-") || hasKey(claimed, c.snap.ID) {
			t.Errorf("claimed %s, which is not due", c.snap.ID)
		}
	}
	if len(page) != 7 {
		t.Errorf("claimed %v, want the 3 unpublished, the 3 stalled and the dead-lettered one", ids)
	}
}

func hasKey(m map[string]string, k string) bool { _, ok := m[k]; return ok }

// An upload the read model completed while its row of the list of
// incomplete uploads was held elsewhere (so the read model's statement
// could not take it off) is taken off by the next round, and not resumed:
// after the horizon the round finds nothing.
func TestCompleterMarksWhatTheReadModelCouldNot(t *testing.T) {
	t.Parallel()
	e := newCompleterEnv(t)
	ctx := context.Background()
	id := e.submit("held", []byte("completed while its record was held"))
	tx, err := e.pg.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT FROM ingest_incomplete WHERE id = $1 FOR UPDATE`, id); err != nil {
		t.Fatal(err)
	}
	e.complete(id)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	unmarked := `SELECT count(*) FROM ingest_incomplete WHERE id = $1`
	if n := e.pg.Count(t, unmarked, id); n != 1 {
		t.Fatalf("%s: listed incomplete %d times, want 1 (the read model skipped it)", id, n)
	}
	e.clock.Advance(completerHorizon + time.Second)
	e.round(e.c, map[string]int{}, map[string]int{})
	if n := e.pg.Count(t, unmarked, id); n != 0 {
		t.Errorf("%s after a round: still listed incomplete", id)
	}
	if evs, _ := e.requests(id); len(evs) != 1 {
		t.Errorf("request events of %s: got %d, want 1 (not resumed)", id, len(evs))
	}
	if r := e.row(id); r.claimed {
		t.Errorf("record of %s: claimed by the round, want left alone", id)
	}
}
