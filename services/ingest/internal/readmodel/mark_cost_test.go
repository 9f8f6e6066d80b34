package readmodel

import (
	"context"
	"encoding/json"
	"fmt"
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

// TestCompletionMarkCost measures what marking ingest's record completed
// adds to the read model's statement, per upload: the statement with the
// mark against the one without, on uploads ingest recorded and published,
// interleaved. The figures are logged (docs/ingest-completer.md).
// What must hold: the first completion writes the mark (more WAL than
// upsert alone), while a blob_stored event and a redelivered completion
// leave the record as it was (its version, xmin, unchanged), and a
// redelivered completion leaves the read model's row as it was too.
func TestCompletionMarkCost(t *testing.T) {
	t.Parallel()
	const n = 64
	pg := testenv.StartPostgres(t)
	ctx := context.Background()
	at := time.Now().UTC()
	facts := func(id string) (stored, completed Fact) {
		t.Helper()
		if _, err := pg.Pool.Exec(ctx, `INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type,
			size, sha256, published_at, published_seq, publish_count) VALUES ($1, 'alice', $1, 'users/1/' || $1, 'text/plain',
			1, 'aa', now(), 1, 1)`, id); err != nil {
			t.Fatal(err)
		}
		blob := events.Blob{Key: events.DefaultKeyPrefix + id, Size: 1, SHA256: "aa", ContentType: "text/plain"}
		ev := &events.Event{ID: id, Owner: "alice", Subject: "users/1/" + id, SHA256: "aa", Time: at, Blob: &blob,
			Ref: &events.Reference{ID: id, Owner: "alice", Subject: "users/1/" + id, Blob: blob, EventTime: at}}
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
			// The record is written by the first completion only, and
			// only by the statement with the mark.
			if xmin[1] != xmin[0] || xmin[3] != xmin[2] || (xmin[2] != xmin[1]) != (s == 1) {
				t.Errorf("%s: versions of the record after blob_stored, completed and a redelivery: %v", id, xmin)
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
	if n := pg.Count(t, `SELECT count(*) FROM ingest_uploads WHERE id LIKE 'cost-1-%' AND completed_at IS NULL`); n != 0 {
		t.Errorf("records completed with the mark: %d not marked", n)
	}
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
