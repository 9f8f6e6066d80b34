package dbschema_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
)

// incompleteVersion is the migration that lists ingest's incomplete uploads
// in a table of their own, in place of the mark and partial index of
// completedVersion.
const incompleteVersion = 33

// Up lists the records not marked completed, and drops the mark, its
// partial index and the (caller, idempotency_key) constraint; down marks
// the records not listed, at the read model's time, and restores the three.
func TestIncompleteListMigration(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, p, exec := before(t, ctx, incompleteVersion)
	done := time.Now().UTC().Truncate(time.Microsecond).Add(-time.Hour)
	for _, id := range []string{"completed", "stored", "dead", "unpublished"} {
		exec(`INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type, size, sha256, published_at)
			VALUES ($1, 'alice', $1, 'users/1/' || $1, 'text/plain', 1, 'aa', CASE WHEN $1 <> 'unpublished' THEN now() END)`, id)
	}
	exec(`INSERT INTO ingest_upload_view (id, stored_at, completed_at, ref) VALUES ('completed', $1, $1, '{}'), ('stored', $1, NULL, NULL)`, done)
	exec(`UPDATE ingest_uploads SET completed_at = $1 WHERE id = 'completed'`, done)

	if _, err := p.UpTo(ctx, incompleteVersion); err != nil {
		t.Fatalf("up: %v", err)
	}
	pg := testenv.Postgres{Pool: pool}
	if got, want := pg.Map(t, `SELECT id, '' FROM ingest_incomplete`), map[string]string{
		"stored": "", "dead": "", "unpublished": "",
	}; !maps.Equal(got, want) {
		t.Errorf("listed incomplete: got %v, want %v", got, want)
	}
	gone := map[string]string{
		"the mark":       `SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = 'ingest_uploads' AND column_name = 'completed_at'`,
		"partial index":  `SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname = 'ingest_uploads_not_completed'`,
		"key constraint": `SELECT count(*) FROM pg_constraint WHERE conname = 'ingest_uploads_caller_idempotency_key_key' AND connamespace = current_schema()::regnamespace`,
	}
	for what, q := range gone {
		if n := pg.Count(t, q); n != 0 {
			t.Errorf("%s after up: %d, want none", what, n)
		}
	}
	// Recorded after the migration: listed by ingest's record statement.
	exec(`INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type, size, sha256)
		VALUES ('late', 'alice', 'late', 'users/1/late', 'text/plain', 1, 'aa')`)
	exec(`INSERT INTO ingest_incomplete (id) VALUES ('late')`)
	// Completed, and its read model's row gone: marked at its creation.
	exec(`INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type, size, sha256, published_at)
		VALUES ('no-view', 'alice', 'no-view', 'users/1/no-view', 'text/plain', 1, 'aa', now())`)

	// An older replica's record after the migration, unlisted: the
	// statement docs/ingest-completer.md gives for after the rollout lists
	// it, and not the completed one.
	exec(`INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type, size, sha256, published_at)
		VALUES ('skewed', 'alice', 'skewed', 'users/1/skewed', 'text/plain', 1, 'aa', now())`)
	exec(`INSERT INTO ingest_incomplete (id)
		SELECT u.id FROM ingest_uploads u
		LEFT JOIN ingest_upload_view rm ON rm.id = u.id
		WHERE NOT (rm.completed_at IS NOT NULL AND rm.ref IS NOT NULL)
		ON CONFLICT (id) DO NOTHING`)
	if got := pg.Map(t, `SELECT id, '' FROM ingest_incomplete WHERE id IN ('skewed', 'completed')`); !maps.Equal(got, map[string]string{"skewed": ""}) {
		t.Errorf("after the rollout's statement: listed %v, want skewed only", got)
	}
	exec(`DELETE FROM ingest_incomplete WHERE id NOT IN ('stored', 'dead', 'unpublished', 'late')`)

	if _, err := p.DownTo(ctx, incompleteVersion-1); err != nil {
		t.Fatalf("down: %v", err)
	}
	if got, want := pg.Map(t, `SELECT id, CASE WHEN completed_at IS NULL THEN 'unmarked' WHEN completed_at = $1 THEN 'view' ELSE 'created' END
		FROM ingest_uploads`, done), map[string]string{
		"completed": "view", "stored": "unmarked", "dead": "unmarked", "unpublished": "unmarked", "late": "unmarked",
		"no-view": "created", "skewed": "created",
	}; !maps.Equal(got, want) {
		t.Errorf("marks after down: got %v, want %v", got, want)
	}
	for what, q := range gone {
		if n := pg.Count(t, q); n != 1 {
			t.Errorf("%s after down: %d, want one", what, n)
		}
	}
	if n := pg.Count(t, `SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'ingest_incomplete'`); n != 0 {
		t.Errorf("ingest_incomplete after down: %d tables, want none", n)
	}
	if _, err := p.UpTo(ctx, incompleteVersion); err != nil {
		t.Fatalf("up again: %v", err)
	}
}
