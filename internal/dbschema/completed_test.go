package dbschema_test

import (
	"context"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
)

// completedVersion is the migration that marks ingest's completed records.
const completedVersion = 31

// The migration marks the records of the uploads the read model had
// recorded completed (with its time), and no other: not those stored,
// dead-lettered, unknown to the read model, or with a completion but no
// reference. The partial index holds the others. Down removes both.
func TestCompletedMarkMigration(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, p, exec := before(t, ctx, completedVersion)
	done := time.Now().UTC().Truncate(time.Microsecond).Add(-time.Hour)
	for _, id := range []string{"completed", "stored", "dead", "unknown", "no-ref"} {
		exec(`INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type, size, sha256, published_at)
			VALUES ($1, 'alice', $1, 'users/1/' || $1, 'text/plain', 1, 'aa', now())`, id)
	}
	exec(`INSERT INTO ingest_upload_view (id, stored_at, completed_at, ref) VALUES
		('completed', $1, $1, '{}'), ('stored', $1, NULL, NULL), ('no-ref', $1, $1, NULL)`, done)
	exec(`INSERT INTO ingest_upload_view (id, dead_seq, dead_reason, dead_step, dead_at) VALUES ('dead', 1, 'invalid', 'blob', $1)`, done)

	if _, err := p.UpTo(ctx, completedVersion); err != nil {
		t.Fatalf("up: %v", err)
	}
	pg := testenv.Postgres{Pool: pool}
	if got, want := pg.Map(t, `SELECT id, coalesce((completed_at = $1)::text, 'unmarked') FROM ingest_uploads`, done), map[string]string{
		"completed": "true", "stored": "unmarked", "dead": "unmarked", "unknown": "unmarked", "no-ref": "unmarked",
	}; !maps.Equal(got, want) {
		t.Errorf("marks: got %v, want %v", got, want)
	}
	// The partial index: what the completer's rounds read.
	def := pg.Map(t, `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()
		AND indexname = 'ingest_uploads_not_completed'`)["ingest_uploads_not_completed"]
	if !strings.HasSuffix(def, "ON "+schemaOf(t, pg)+".ingest_uploads USING btree (id) WHERE (completed_at IS NULL)") {
		t.Errorf("index ingest_uploads_not_completed: got %q, want on id, where completed_at IS NULL", def)
	}

	if _, err := p.DownTo(ctx, completedVersion-1); err != nil {
		t.Fatalf("down: %v", err)
	}
	if n := pg.Count(t, `SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema()
		AND table_name = 'ingest_uploads' AND column_name = 'completed_at'`); n != 0 {
		t.Errorf("ingest_uploads.completed_at after down: %d columns, want none", n)
	}
	if n := pg.Count(t, `SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'ingest_uploads_not_completed'`); n != 0 {
		t.Errorf("the partial index after down: %d, want none", n)
	}
	if _, err := p.UpTo(ctx, completedVersion); err != nil {
		t.Fatalf("up again: %v", err)
	}
}

func schemaOf(t *testing.T, pg testenv.Postgres) string {
	t.Helper()
	return pg.Map(t, `SELECT 's', current_schema()`)["s"]
}
