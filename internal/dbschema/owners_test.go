package dbschema_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/blobref/blobref/internal/dbschema"
	"github.com/blobref/blobref/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ownersVersion is the migration that gives subjects owners.
const ownersVersion = 10

// The owners migration upgrades a database written before it: references
// ingest accepted belong to their caller, the others to nobody, and every
// owner's current reference of a subject is its newest one, not one dated in
// the future. Down restores the pointer per subject.
func TestOwnersMigration(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pool, p, exec := before(t, ctx, ownersVersion)

	now := time.Now().UTC().Truncate(time.Microsecond)
	ref := func(id, subject string, at time.Time) {
		t.Helper()
		exec(`INSERT INTO upload_refs (id, subject, blob_key, size, sha256, content_type, event_time)
			VALUES ($1, $2, 'uploads/' || $1, 1, 'aa', 'text/plain', $3)`, id, subject, at)
		exec(`INSERT INTO step_markers (upload_id, step, fingerprint, result)
			VALUES ($1, 'ref', 'aa', jsonb_build_object('id', $1::text, 'subject', $2::text))`, id, subject)
	}
	ingested := func(id, caller, subject string) {
		t.Helper()
		exec(`INSERT INTO ingest_uploads (id, caller, idempotency_key, subject, content_type, size, sha256)
			VALUES ($1, $2, $1, $3, 'text/plain', 1, 'aa')`, id, caller, subject)
	}
	// users/42/avatar: alice's upload, then mallory's takeover, which moved
	// the pointer; bob's direct producer upload on another subject; an upload
	// dated in 2099 that pinned users/7/avatar.
	ref("a1", "users/42/avatar", now.Add(-2*time.Hour))
	ingested("a1", "alice", "users/42/avatar")
	ref("a2", "users/42/avatar", now.Add(-time.Hour))
	ingested("a2", "alice", "users/42/avatar")
	ref("m1", "users/42/avatar", now.Add(-time.Minute))
	ingested("m1", "mallory", "users/42/avatar")
	ref("d1", "orders/9", now.Add(-time.Hour))
	ref("f1", "users/7/avatar", now.Add(-time.Hour))
	ingested("f1", "carol", "users/7/avatar")
	ref("f2", "users/7/avatar", time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC))
	ingested("f2", "carol", "users/7/avatar")
	exec(`INSERT INTO subject_refs (subject, upload_id, event_time)
		SELECT DISTINCT ON (subject) subject, id, event_time FROM upload_refs ORDER BY subject, event_time DESC, id DESC`)

	if err := dbschema.Migrate(ctx, pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}

	owners := testenv.Postgres{Pool: pool}
	if got, want := owners.Map(t, `SELECT id, owner FROM upload_refs`), map[string]string{
		"a1": "alice", "a2": "alice", "m1": "mallory", "d1": "", "f1": "carol", "f2": "carol",
	}; !maps.Equal(got, want) {
		t.Errorf("owners: got %v, want %v", got, want)
	}
	if got, want := owners.Map(t, `SELECT owner || ' ' || subject, upload_id FROM subject_refs`), map[string]string{
		"alice users/42/avatar":   "a2",
		"mallory users/42/avatar": "m1",
		" orders/9":               "d1",
		"carol users/7/avatar":    "f1",
	}; !maps.Equal(got, want) {
		t.Errorf("current references: got %v, want %v", got, want)
	}
	if got, want := owners.Map(t, `SELECT upload_id, coalesce(result->>'owner', '-') FROM step_markers WHERE step = 'ref'`), map[string]string{
		"a1": "alice", "a2": "alice", "m1": "mallory", "d1": "-", "f1": "carol", "f2": "carol",
	}; !maps.Equal(got, want) {
		t.Errorf("owners in the ref markers: got %v, want %v", got, want)
	}
	// One pointer per owner and subject.
	if _, err := pool.Exec(ctx, `INSERT INTO subject_refs (owner, subject, upload_id, event_time) VALUES ('alice', 'users/42/avatar', 'a1', now())`); err == nil {
		t.Error("a second current reference of alice's users/42/avatar was stored")
	}

	if _, err := p.DownTo(ctx, ownersVersion-1); err != nil {
		t.Fatalf("down: %v", err)
	}
	if got, want := owners.Map(t, `SELECT subject, upload_id FROM subject_refs`), map[string]string{
		"users/42/avatar": "m1", "orders/9": "d1", "users/7/avatar": "f2",
	}; !maps.Equal(got, want) {
		t.Errorf("current references after down: got %v, want %v", got, want)
	}
	if n := owners.Count(t, `SELECT count(*) FROM step_markers WHERE result ? 'owner'`); n != 0 {
		t.Errorf("ref markers with an owner after down: %d, want 0", n)
	}
}
