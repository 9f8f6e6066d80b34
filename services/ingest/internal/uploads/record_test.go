package uploads

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/blobref/blobref/internal/testenv"
)

// A request whose record Postgres refuses fails alone: the rest of its
// batch is recorded.
func TestABadRecordFailsAlone(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	s := &Service{Pool: pg.Pool}
	var jobs []*job
	for i := range 3 {
		rec := record{
			ID: fmt.Sprintf("id-%d", i), Caller: "alice", Key: fmt.Sprintf("key-%d", i), Subject: "users/1/avatar",
			ContentType: "image/png", Size: 1, SHA256: fmt.Sprintf("%064x", i), CreatedAt: time.Now(),
		}
		if i == 1 {
			rec.Subject = "users/1/\x00" // no text in Postgres holds a NUL
		}
		jobs = append(jobs, &job{ctx: context.Background(), rec: rec, inline: []byte{byte(i)}, insert: true})
	}
	s.insert(context.Background(), jobs)
	var unavailable *UnavailableError
	for i, j := range jobs {
		switch {
		case i == 1 && (j.err == nil || j.won || errors.As(j.err, &unavailable)):
			t.Errorf("the bad job: got won %v, %v; want a failure of its own, not an outage", j.won, j.err)
		case i != 1 && (j.err != nil || !j.won):
			t.Errorf("job %d: got won %v, %v; want it recorded", i, j.won, j.err)
		}
	}
	if n := pg.Count(t, `SELECT count(*) FROM ingest_uploads`); n != 2 {
		t.Errorf("records: got %d, want 2", n)
	}
}

// recordPublishes commits without waiting for the log's flush, and only its
// own transaction does: the connection goes back to the pool committing
// synchronously, as recordUploads and the read model must.
func TestRecordPublishesCommitsAsynchronously(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t)
	ctx := context.Background()
	s := &Service{Pool: pg.Pool}
	j := &job{ctx: ctx, rec: record{ID: "async-1", Caller: "alice", Key: "async-1", Subject: "users/1/avatar",
		ContentType: "image/png", Size: 1, SHA256: fmt.Sprintf("%064x", 1), CreatedAt: time.Now()}, inline: []byte{1}, insert: true}
	s.insert(ctx, []*job{j})
	if j.err != nil || !j.won {
		t.Fatalf("record: got won %v, %v", j.won, j.err)
	}
	conn, err := pg.Pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	setting := func() string {
		t.Helper()
		var v string
		if err := conn.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	at, seq := time.Now(), int64(7)
	tag, err := tx.Exec(ctx, recordPublishes, []string{j.rec.ID}, []int{0}, []*time.Time{&at}, []*int64{&seq})
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("recordPublishes: %v, %v rows; want the record updated", err, tag.RowsAffected())
	}
	var v string
	if err := tx.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&v); err != nil || v != "off" {
		t.Errorf("in its transaction: synchronous_commit %q, %v; want off", v, err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if v := setting(); v != "on" {
		t.Errorf("after its transaction: synchronous_commit %q, want on", v)
	}
	if n := pg.Count(t, `SELECT count(*) FROM ingest_uploads WHERE id = $1 AND publish_count = 1 AND payload IS NULL AND published_seq = 7`, j.rec.ID); n != 1 {
		t.Errorf("the publish is not recorded")
	}
}
