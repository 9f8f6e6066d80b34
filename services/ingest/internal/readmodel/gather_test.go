package readmodel_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
	"github.com/blobref/blobref/services/ingest/internal/readmodel"
)

// Events that trickle in, a few milliseconds apart as at a few uploads a
// second, are applied together when they come within Gather of the first:
// one statement and one commit, not one each. With a gather shorter than
// their gaps, each is a statement of its own.
func TestGatherAppliesWhatTricklesInTogether(t *testing.T) {
	t.Parallel()
	const n, gap = 5, 30 * time.Millisecond
	for _, tc := range []struct {
		name        string
		gather      time.Duration
		least, most int // statements
	}{
		{"gathered", 10 * time.Second, 1, 1},
		{"applied as they come", time.Millisecond, 2, n},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pg, js := start(t)
			if _, err := pg.Pool.Exec(t.Context(), `CREATE TABLE view_statements (at timestamptz);
				CREATE FUNCTION note_view_statement() RETURNS trigger LANGUAGE plpgsql AS
					$$ BEGIN INSERT INTO view_statements VALUES (clock_timestamp()); RETURN NULL; END $$;
				CREATE TRIGGER note_view_statement AFTER INSERT ON ingest_upload_view
					FOR EACH STATEMENT EXECUTE FUNCTION note_view_statement()`); err != nil {
				t.Fatal(err)
			}
			runProjectorWith(t, &readmodel.Projector{Pool: pg.Pool, JS: js, Logger: testenv.Logger(t), Gather: tc.gather})
			for i := range n {
				if i > 0 {
					time.Sleep(gap)
				}
				testenv.Publish(t, js, newPipeline(t, fmt.Sprintf("trickle-%d", i), "alice").completed, "")
			}
			pg.AwaitCount(t, within, n, `SELECT count(*) FROM ingest_upload_view WHERE completed_at IS NOT NULL AND ref IS NOT NULL`)
			awaitDrained(t, js)
			if s := pg.Count(t, `SELECT count(*) FROM view_statements`); s < tc.least || s > tc.most {
				t.Errorf("%d events %v apart, gather %v: applied in %d statements, want %d to %d", n, gap, tc.gather, s, tc.least, tc.most)
			}
		})
	}
}
