package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"

	"github.com/blobref/blobref/bench/internal/benchtest"
	"github.com/blobref/blobref/internal/dbschema"
)

// TestCheckAndBackends runs a pipeline without services (nats-server and a
// schema), writes what blobwriter and refwriter would for two uploads, and
// checks that Check passes them and catches each kind of damage, and that
// Backends and Meter find the backends of one label's connections only.
func TestCheckAndBackends(t *testing.T) {
	ctx, bins, dir := buildTest(t, NATSServer)
	p := startTest(ctx, t, bins, filepath.Join(dir, "run"))
	pool, err := pgxpool.New(ctx, p.ClientURL("writer"))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := dbschema.Migrate(ctx, pool); err != nil {
		t.Fatal(err)
	}
	bucket, err := fileblob.OpenBucket(p.BlobDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()

	var want []Expected
	for _, id := range []string{"u1", "u2"} {
		data := []byte("bytes of " + id)
		sum := sha256.Sum256(data)
		w := Expected{ID: id, Subject: "s/" + id, ContentType: "text/plain", Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
		want = append(want, w)
		if err := bucket.WriteAll(ctx, "uploads/"+id, data, &blob.WriterOptions{ContentType: w.ContentType, Metadata: map[string]string{"sha256": w.SHA256}}); err != nil {
			t.Fatal(err)
		}
		mustExec(t, pool, `INSERT INTO step_markers (upload_id, step, fingerprint, result) VALUES ($1, 'blob', $2, '{}'), ($1, 'ref', $2, '{}')`, id, w.SHA256)
		mustExec(t, pool, `INSERT INTO upload_refs (id, subject, blob_key, size, sha256, content_type, event_time) VALUES ($1, $2, $3, $4, $5, $6, now())`,
			id, w.Subject, "uploads/"+id, w.Size, w.SHA256, w.ContentType)
		mustExec(t, pool, `INSERT INTO subject_refs (subject, upload_id, event_time) VALUES ($1, $2, now())`, w.Subject, id)
	}
	got, err := p.Check(ctx, want)
	if err != nil || got != (Checked{Uploads: 2, Objects: 2}) {
		t.Fatalf("whole uploads: got %+v, %v; want 2 rows and 2 objects checked, no error", got, err)
	}

	// Each damage, undone after its check.
	for _, tc := range []struct {
		name, damage, repair, want string
	}{
		{"row", `UPDATE upload_refs SET size = size + 1 WHERE id = 'u2'`, `UPDATE upload_refs SET size = size - 1 WHERE id = 'u2'`, "upload u2: upload_refs has"},
		{"marker", `DELETE FROM step_markers WHERE upload_id = 'u1' AND step = 'ref'`, `INSERT INTO step_markers (upload_id, step, fingerprint, result) VALUES ('u1', 'ref', '', '{}')`, "1 of the blob and ref step markers"},
		{"subject", `UPDATE subject_refs SET upload_id = 'u1' WHERE subject = 's/u2'`, `UPDATE subject_refs SET upload_id = 'u2' WHERE subject = 's/u2'`, `points at u1`},
		{"missing", `DELETE FROM subject_refs WHERE upload_id = 'u2'; DELETE FROM upload_refs WHERE id = 'u2'`, `INSERT INTO upload_refs (id, subject, blob_key, size, sha256, content_type, event_time) VALUES ('u2', 's/u2', 'uploads/u2', ` + itoa(want[1].Size) + `, '` + want[1].SHA256 + `', 'text/plain', now()); INSERT INTO subject_refs (subject, upload_id, event_time) VALUES ('s/u2', 'u2', now())`, "upload u2: no upload_refs row"},
	} {
		mustExec(t, pool, tc.damage)
		if _, err := p.Check(ctx, want); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error saying %q", tc.name, err, tc.want)
		}
		mustExec(t, pool, tc.repair)
	}
	if _, err := p.Check(ctx, want); err != nil {
		t.Fatalf("after the repairs: %v", err)
	}
	if err := os.WriteFile(filepath.Join(p.BlobDir, "uploads", "u1"), []byte("other bytes of u1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Check(ctx, want); err == nil || !strings.Contains(err.Error(), "object uploads/u1 has 17 bytes") {
		t.Errorf("changed object: got %v, want an error naming its size and sha256", err)
	}

	// Backends: the writer's, nobody else's.
	pids, err := p.Backends("writer")
	if err != nil || len(pids) == 0 {
		t.Fatalf("got %v, %v; want the writer's backends", pids, err)
	}
	if stat := pool.Stat(); len(pids) != int(stat.TotalConns()) {
		t.Errorf("got %d backends, want the pool's %d connections", len(pids), stat.TotalConns())
	}
	if _, err := p.Backends("writer", "nobody"); err == nil || !strings.Contains(err.Error(), "no Postgres backend of nobody") {
		t.Errorf("a label without connections: got %v, want an error naming it", err)
	}
	other, err := pgxpool.New(ctx, p.ClientURL("other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	again, err := p.Backends("writer")
	if err != nil || !slices.Equal(slices.Sorted(slices.Values(again)), slices.Sorted(slices.Values(pids))) {
		t.Errorf("with another label's connection open: got %v, %v; want %v", again, err, pids)
	}
	byLabel, err := p.BackendsOf("writer", "other")
	if err != nil || !slices.Equal(slices.Sorted(slices.Values(byLabel["writer"])), slices.Sorted(slices.Values(pids))) || len(byLabel["other"]) != 1 {
		t.Errorf("by label: got %v, %v; want the writer's %v and one of other's", byLabel, err, pids)
	}

	// Analyze: every table of the pipeline's schema, and no other schema's.
	if err := p.Analyze(ctx); err != nil {
		t.Fatal(err)
	}
	var tables, unanalyzed int
	if err := pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE last_analyze IS NULL) FROM pg_stat_user_tables WHERE schemaname = $1`,
		p.Schema).Scan(&tables, &unanalyzed); err != nil {
		t.Fatal(err)
	}
	if tables == 0 || unanalyzed != 0 {
		t.Errorf("after Analyze: %d of the schema's %d tables not analyzed, want none", unanalyzed, tables)
	}
}

// buildTest builds programs for a test that reads Linux's /proc (skipped
// elsewhere) and takes up to five minutes; dir is the test's own.
func buildTest(t *testing.T, programs ...string) (ctx context.Context, bins Binaries, dir string) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the benchmark reads Linux's /proc")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	dir = t.TempDir()
	bins, err := Build(ctx, filepath.Join(dir, "bin"), programs...)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, bins, dir
}

// startTest starts a pipeline of services (none: nats-server and the
// schema only) from bins in dir, stopped when the test ends.
func startTest(ctx context.Context, t *testing.T, bins Binaries, dir string, services ...string) *Pipeline {
	t.Helper()
	p, err := Start(ctx, Config{Binaries: bins, Dir: dir, DatabaseURL: benchtest.DatabaseURL(), Services: append([]string{}, services...)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Error(err)
		}
	})
	return p
}

func mustExec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
